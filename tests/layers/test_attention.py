"""Conditional multi-head attention: conditional projections that Keras tracks, saves and counts as its own."""

import numpy as np
import pytest

import keras_smart
from keras_smart import _compat
from keras_smart import layers as cl
from tests import models
from tests.models import keras

_CLASSES = [cl.DualMaskMultiHeadAttention, cl.NoisyMultiHeadAttention]
_IDS = [c.__name__ for c in _CLASSES]
_PROJECTIONS = ["attention_output", "key", "query", "value"]


def _attention_model():
    inputs = keras.Input((6, 8))
    outputs = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(inputs, inputs)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("cls", _CLASSES, ids=_IDS)
def test_projections_are_conditional_named_after_the_layer_and_tracked_once(cls):
    method = "smart" if cls is cl.DualMaskMultiHeadAttention else "floats"
    smart = keras_smart.convert(_attention_model(), method)
    mha = smart.get_layer("mha")
    assert type(mha) is cls and sorted(mha.projections()) == _PROJECTIONS
    einsums = [l for l in _compat.flatten_layers(smart) if isinstance(l, keras.layers.EinsumDense)]
    assert sorted(l.name for l in einsums) == [f"mha_{p}" for p in _PROJECTIONS]
    assert all(type(l) is cls.projection_class for l in einsums)
    own = [w for l in einsums for w in l.weights]
    assert {id(w) for w in mha.weights} == {id(w) for w in own} and len(mha.weights) == len(own)
    assert len(smart.get_weights()) == len(smart.weights) == len(own) + 1  # + the trade-off
    assert sorted(keras_smart.get_masks(smart)) == [f"mha_{p}" for p in _PROJECTIONS]


@pytest.mark.parametrize("cls", _CLASSES, ids=_IDS)
def test_options_reach_every_projection_with_distinct_seeds(cls):
    options = {"seed": 5, "noise_init": 0.1}
    if cls is cl.DualMaskMultiHeadAttention:
        options["tradeoff_mode"] = "noise"
    layer = cls(num_heads=2, key_dim=4, name="mha", **options)
    layer(np.zeros((1, 3, 8), "float32"), np.zeros((1, 3, 8), "float32"))
    projections = list(layer.projections().values())
    assert len({p.seed for p in projections}) == len(projections)
    assert all(p.noise_init == 0.1 and p.noisy for p in projections)
    assert cls.from_config(layer.get_config()).conditional_options == layer.conditional_options


def test_cross_attention_with_its_own_key_and_a_causal_mask_is_exact():
    query = np.random.default_rng(0).normal(size=(2, 4, 6)).astype("float32")
    value = np.random.default_rng(1).normal(size=(2, 4, 5)).astype("float32")
    key = np.random.default_rng(2).normal(size=(2, 4, 3)).astype("float32")
    source = keras.layers.MultiHeadAttention(num_heads=3, key_dim=2, value_dim=4, output_shape=7, name="cross")
    expected = source(query, value, key=key, use_causal_mask=True)
    layer = cl.DualMaskMultiHeadAttention.from_layer(source)
    np.testing.assert_allclose(layer(query, value, key=key, use_causal_mask=True), expected, atol=1e-6)
    models.randomize_conditional_state(keras.Sequential([layer]), seed=1)
    with cl.tradeoff_override(1.0):
        expected = layer(query, value, key=key).numpy()
    np.testing.assert_allclose(layer.to_layer(1.0)(query, value, key=key), expected, atol=1e-5)


@pytest.mark.skipif(_compat.IS_LEGACY, reason="tf_keras's MultiHeadAttention has no gate")
def test_the_gate_projection_of_keras_3_is_conditional_too():
    x = np.random.default_rng(0).normal(size=(2, 4, 6)).astype("float32")
    source = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, use_gate=True, name="gated")
    expected = source(x, x)
    layer = cl.NoisyMultiHeadAttention.from_layer(source)
    assert type(layer.projections()["gate"]) is cl.NoisyEinsumDense
    np.testing.assert_allclose(layer(x, x), expected, atol=1e-6)


@pytest.mark.skipif(_compat.IS_LEGACY, reason="LoRA and quantization are Keras 3 features")
def test_lora_and_quantized_projections_are_refused_with_a_way_forward():
    inputs = keras.Input((6, 8))
    lora = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 4), lora_rank=2, name="lora")(inputs)
    with pytest.raises(ValueError, match=r"'lora' has LoRA enabled.*skip=\['lora'\]"):
        keras_smart.convert(keras.Model(inputs, lora))
    model = _attention_model()
    model.get_layer("mha").query_dense.enable_lora(2)
    with pytest.raises(ValueError, match=r"'mha': its query projection has LoRA.*skip=\['mha'\]"):
        keras_smart.convert(model)
    dense = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 4), name="int8")
    model = keras.Model(inputs, dense(inputs))
    dense.quantize("int8")
    with pytest.raises(ValueError, match=r"'int8' is quantized.*skip=\['int8'\]"):
        keras_smart.convert(model)


def test_count_nonzero_counts_the_projections_and_their_macs():
    smart = keras_smart.convert(models.small_vit_model(), "smart")
    keras_smart.design_masks(smart, score="random", density=(0.5, 0.3), seed=0)
    counts = keras_smart.count_nonzero(smart)
    for projection in _PROJECTIONS:
        row = counts.layers[f"attention_{projection}"]
        assert row["total"] == 16 * 2 * 8 and row["adv"] < row["clean"] < row["total"]
        assert row["macs_dense"] == 16 * row["total"]  # 16 tokens
        assert row["macs_clean"] == 16 * row["clean"] and row["macs_adv"] == 16 * row["adv"]
    assert counts.macs_dense is not None and counts.macs_adv < counts.macs_clean < counts.macs_dense
    assert counts.unconverted == 0


def test_a_converted_vit_trains_its_projections_only_through_unmasked_weights():
    smart = keras_smart.convert(models.small_vit_model(), "smart")
    keras_smart.design_masks(smart, score="random", density=(0.5, 0.5), seed=0)
    query = smart.get_layer("attention").projections()["query"]
    before = query.kernel.numpy().copy()
    masks = {n: query.mask_value(n) for n in query.mask_names("kernel")}
    x = models.inputs_for(smart, batch=8)
    y = np.arange(8) % 10
    smart.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    smart.fit(x, y, epochs=1, batch_size=8, verbose=0)
    moved = query.kernel.numpy() != before
    assert moved.any() and not (moved & (masks["kernel_clean_mask"] == 0)).any()
    for name, mask in masks.items():
        np.testing.assert_array_equal(query.mask_value(name), mask)
