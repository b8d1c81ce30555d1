"""binary_relax() and finalize(): which layers are quantized, composition with masks, the level sets."""

import numpy as np
import pytest

import keras_smart
from keras_smart import quantization
from keras_smart.layers import quantized
from keras_smart.quantization import graph
from tests.models import keras

_X = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype("float32")


def _residual():
    """stem -> [c1 -> c2 (1x1, main branch)] + [short (1x1 shortcut)] -> Add -> pool -> fc."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    a = keras.layers.Conv2D(6, 3, padding="same", name="c1")(h)
    a = keras.layers.BatchNormalization(name="bn1")(a)
    a = keras.layers.ReLU(name="relu1")(a)
    a = keras.layers.Conv2D(6, 1, name="c2")(a)
    a = keras.layers.BatchNormalization(name="bn2")(a)
    s = keras.layers.Conv2D(6, 1, name="short")(h)
    s = keras.layers.BatchNormalization(name="bn_short")(s)
    h = keras.layers.Add(name="add")([a, s])
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(5, name="fc")(h), name="residual")


def _names(model):
    return sorted(l.name for l in quantization.quantized_layers(model))


@pytest.mark.parametrize("options, expected", [
    ({}, ["c1", "c2", "stem"]),
    ({"shortcuts": True}, ["c1", "c2", "short", "stem"]),
    ({"classifier": True}, ["c1", "c2", "fc", "stem"]),
    ({"skip": ["c1"], "classifier": True}, ["c2", "fc", "stem"]),
    ({"skip": lambda layer: layer.name == "stem"}, ["c1", "c2"]),
])
def test_default_exclusions_and_the_options_that_include_them(options, expected):
    relaxed = quantization.binary_relax(_residual(), **options)
    assert isinstance(relaxed, keras_smart.SmartModel)
    assert _names(relaxed) == expected
    assert type(relaxed.get_layer("c1")).__name__ == ("QuantizedConv2D" if "c1" in expected else "Conv2D")


def test_a_nested_model_and_a_keras_applications_resnet():
    inner = _residual()
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="top")(inner(inputs)))
    assert _names(quantization.binary_relax(outer)) == ["c1", "c2", "fc", "stem"]  # fc is no longer last
    resnet = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=4)
    model_graph = graph.ModelGraph(resnet)
    shortcuts = [l.name for l in resnet.layers if model_graph.is_shortcut(l)]
    assert shortcuts == [f"conv{i}_block1_0_conv" for i in range(2, 6)]
    assert not model_graph.is_shortcut(resnet.get_layer("conv2_block1_3_conv"))  # 1x1, main branch
    assert [l.name for l in resnet.layers if graph.computes_with_kernels(l) and model_graph.is_classifier(l)] == [
        "predictions"
    ]


def _masked_smart():
    smart = keras_smart.convert(_residual(), "smart")
    rng = np.random.default_rng(1)
    masks = {
        name: {k: (rng.random(v.shape) < 0.5).astype("float32") for k, v in layer_masks.items()}
        for name, layer_masks in keras_smart.get_masks(smart).items()
    }
    keras_smart.set_masks(smart, masks)
    keras_smart.set_tradeoff(smart, 1.0)
    return smart, masks


def test_a_smart_model_composes_masks_and_ternary_levels_on_every_path():
    smart, masks = _masked_smart()
    before = [w.copy() for w in smart.get_weights()]
    relaxed = quantization.binary_relax(smart, "ternary")
    assert keras_smart.get_tradeoff(relaxed) == 1.0 and _names(relaxed) == ["c1", "c2", "stem"]
    assert all(np.array_equal(a, b) for a, b in zip(before, smart.get_weights()))  # input not modified
    assert not quantization.quantized_layers(smart)
    quantization.finalize(relaxed)
    scales = {}
    for tradeoff, mask_name in ((0.0, "kernel_clean_mask"), (1.0, "kernel_adv_mask")):
        plain = keras_smart.strip(relaxed, tradeoff=tradeoff)
        keras_smart.set_tradeoff(relaxed, tradeoff)
        np.testing.assert_allclose(plain(_X), relaxed(_X), atol=1e-5)
        for name in ("c1", "c2", "stem"):
            kernel = plain.get_layer(name).kernel.numpy()
            scales.setdefault(name, set()).update(np.unique(np.abs(kernel[kernel != 0])).tolist())
            assert not kernel[masks[name][mask_name] == 0].any()
    assert all(len(levels) == 1 for levels in scales.values()), scales  # {-a, 0, a}, one a for both paths


@pytest.mark.parametrize("bits", quantized.BITS)
@pytest.mark.parametrize("per_channel", [False, True])
def test_finalize_leaves_only_the_level_set_and_the_model_equals_its_strip(bits, per_channel):
    relaxed = quantization.binary_relax(_residual(), bits, per_channel=per_channel, classifier=True)
    assert quantization.finalize(relaxed) is relaxed
    for layer in quantization.quantized_layers(relaxed):
        kernel = layer.kernel.numpy()
        groups = [kernel[..., c] for c in range(kernel.shape[-1])] if per_channel else [kernel]
        for values in groups:
            levels = np.unique(np.abs(values))
            if bits == "binary":
                assert len(levels) == 1
            elif bits == "ternary":
                assert len(levels[levels > 0]) <= 1
            else:
                codes = values / (levels[-1] / 7)
                np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
        assert float(layer.relax_eta.numpy()) == np.inf
    np.testing.assert_allclose(relaxed(_X), keras_smart.strip(relaxed)(_X), atol=1e-5)


def test_bad_input_is_refused_with_the_way_forward():
    model = _residual()
    with pytest.raises(ValueError, match=r"\['binary', 'ternary', 'int4'\]"):
        quantization.binary_relax(model, "int2")
    with pytest.raises(ValueError, match="already relaxed"):
        quantization.binary_relax(quantization.binary_relax(model))
    with pytest.raises(ValueError, match=r"nothing to quantize.*fc \(classifier\)"):
        quantization.binary_relax(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")]))
    with pytest.raises(ValueError, match="names no layer"):
        quantization.binary_relax(model, skip=["nope"])
    with pytest.raises(ValueError, match="no quantized layers"):
        quantization.finalize(model)
    assert not any(type(l).__name__.startswith("Quantized") for l in model.layers)
