"""Pruning composes with the conditional layers: native gradual pruning (both flavours) and the TF-MOT bridge."""

import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import layers as cl
from keras_smart import pruning
from keras_smart import registry
from tests import models
from tests.models import keras

_MASK_DENSITY = {"smart": (0.8, 0.6), "floats": 0.8}


def _model(method, builder=models.conv_block_model):
    """A converted model with path masks designed (smart, floats), or the plain model."""
    if method == "plain":
        return builder()
    smart = keras_smart.convert(builder(), method)
    if method in _MASK_DENSITY:
        keras_smart.design_masks(smart, score="random", density=_MASK_DENSITY[method], seed=3)
    return smart


def _kernel_layers(model):
    return [l for l in _compat.flatten_layers(model) if registry.kernel_names(l)]


def _assert_zero_on_every_path(model):
    """Where a kernel is zero every path computes with zero, and the path masks lie inside its non-zeros."""
    for layer in _kernel_layers(model):
        for name in registry.kernel_names(layer):
            kernel = getattr(layer, name).numpy()
            if not isinstance(layer, cl.ConditionalKernel):
                continue
            for lam in (0.0, 0.3, 1.0):  # noise on: FLOAT's noise must spare the zeros too
                effective = layer.conditional_kernel(name, tf.constant(lam)).numpy()
                assert np.all(effective[kernel == 0] == 0), (layer.name, name, lam)
            masks = list(layer.kernel_masks(name).values())
            if masks:
                union = np.any([m > 0 for m in masks], axis=0)
                np.testing.assert_array_equal(kernel != 0, union, err_msg=f"{layer.name}/{name}")


@pytest.mark.parametrize("method", models.METHODS + ("plain",))
def test_one_shot_prune_reaches_the_target_on_every_kernel_and_every_path(method):
    model = _model(method)
    if method != "plain":
        models.randomize_conditional_state(model, seed=1)
        if method in _MASK_DENSITY:  # randomize_conditional_state drew new masks; design them again
            keras_smart.design_masks(model, score="random", density=_MASK_DENSITY[method], seed=3)
    assert pruning.prune(model, 0.7) is model
    sparsity = pruning.kernel_sparsity(model)
    assert set(sparsity) == {
        "conv/kernel",
        f"dw/{_compat.DEPTHWISE_KERNEL}",
        "sep/depthwise_kernel",
        "sep/pointwise_kernel",
        "fc1/kernel",
        "logits/kernel",
    }
    for name, value in sparsity.items():
        size = next(getattr(l, name.split("/")[1]).numpy().size for l in _kernel_layers(model) if l.name == name.split("/")[0])
        assert value >= 0.7 - 0.5 / size, name
        assert value <= 0.7 + 0.5 / size, f"{name}: pruned more than asked ({value})"
    _assert_zero_on_every_path(model)
    if method == "smart":
        # Both paths still differ: pruning intersected each mask with one pruning mask.
        conv = model.get_layer("conv")
        assert not np.array_equal(conv.kernel_clean_mask.numpy(), conv.kernel_adv_mask.numpy())


def test_weights_no_path_uses_are_pruned_first_and_kept_weights_are_the_largest():
    smart = keras_smart.convert(models.conv_block_model(), "smart")
    keras_smart.design_masks(smart, score="random", density=(0.4, 0.4), seed=0)
    conv = smart.get_layer("conv")
    kernel_before = conv.kernel.numpy()
    union = (conv.kernel_clean_mask.numpy() + conv.kernel_adv_mask.numpy()) > 0
    pruning.prune(smart, 0.5, layers=["conv"])
    kernel = conv.kernel.numpy()
    alive = kernel != 0
    assert np.all(union[alive]), "a weight outside both masks survived"
    assert alive.sum() == min(round(0.5 * kernel.size), union.sum())
    assert np.abs(kernel_before[alive]).min() >= np.abs(kernel_before[union & ~alive]).max()
    np.testing.assert_array_equal(kernel[alive], kernel_before[alive])
    assert pruning.kernel_sparsity(smart)["fc1/kernel"] < 0.5, "layers= restricts what is pruned"


def test_gradual_schedule_follows_polynomial_decay_and_pruned_weights_stay_zero():
    smart = _model("smart")
    schedule = pruning.PolynomialDecay(begin_step=0, end_step=6, initial_sparsity=0.1, power=3, frequency=2)
    pruning.prune(smart, 0.6, schedule=schedule)
    assert pruning.pruning_level(smart) == pytest.approx(0.1)
    zeros_at_start = smart.get_layer("conv").kernel.numpy() == 0
    smart.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(smart, batch=16), np.arange(16) % 4
    smart.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[pruning.UpdatePruning()])
    updates = pruning._STATES[smart].updates  # pylint: disable=protected-access
    expected = [(s, 0.6 + (0.1 - 0.6) * (1 - s / 6) ** 3) for s in (0, 2, 4, 6)]
    assert [u[0] for u in updates] == [e[0] for e in expected]
    np.testing.assert_allclose([u[1] for u in updates], [e[1] for e in expected])
    zeros_at_end = smart.get_layer("conv").kernel.numpy() == 0
    assert np.all(zeros_at_end[zeros_at_start]), "a pruned weight came back"
    for value in pruning.kernel_sparsity(smart).values():
        assert value == pytest.approx(0.6, abs=0.03)
    _assert_zero_on_every_path(smart)


def test_pruned_weights_stay_zero_through_adversarial_training():
    smart = _model("smart", models.sequential_model)  # small: the adversarial train step traces fast
    pruning.prune(smart, 0.5)
    zeros = {l.name: l.kernel.numpy() == 0 for l in _kernel_layers(smart) if hasattr(l, "kernel")}
    smart.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(smart, batch=6), np.arange(6) % 3
    attack = keras_smart.AttackConfig(kind="fgsm", eps=0.1)
    history = smart.fit(
        x,
        y,
        batch_size=6,
        epochs=1,
        verbose=0,
        callbacks=[keras_smart.callbacks.AdversarialCallback(attack=attack), pruning.UpdatePruning()],
    )
    assert "adv_accuracy" in history.history
    for name, zero in zeros.items():
        assert np.all(smart.get_layer(name).kernel.numpy()[zero] == 0), name
    _assert_zero_on_every_path(smart)


def test_pruning_again_resumes_from_the_zeros_and_only_grows():
    model = _model("float")
    pruning.prune(model, 0.3)
    first = {
        (l.name, k): getattr(l, k).numpy() == 0
        for l in _kernel_layers(model)
        for k in registry.kernel_names(l)
    }
    pruning.strip_pruning(model)
    assert pruning.pruning_level(model) is None
    pruning.prune(model, 0.6)
    for layer in _kernel_layers(model):
        for name in registry.kernel_names(layer):
            assert np.all((getattr(layer, name).numpy() == 0)[first[layer.name, name]]), (layer.name, name)
    assert min(pruning.kernel_sparsity(model).values()) >= 0.59


def test_strip_pruning_unregisters_a_natively_pruned_model():
    model = _model("plain")
    pruning.prune(model, 0.5)
    assert pruning.strip_pruning(model) is model
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(model, batch=4), np.arange(4) % 4
    with pytest.raises(ValueError, match="not pruned by keras_smart.pruning.prune"):
        model.fit(x, y, verbose=0, callbacks=[pruning.UpdatePruning()])
    assert pruning.strip_pruning(models.conv_block_model()) is not None  # an unpruned model passes through


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"target_sparsity": 0.0}, ValueError, "in \\(0, 1\\)"),
        ({"target_sparsity": 1.0}, ValueError, "in \\(0, 1\\)"),
        ({"target_sparsity": "half"}, TypeError, "target_sparsity"),
        ({"target_sparsity": 0.5, "schedule": "poly"}, TypeError, "PolynomialDecay"),
        ({"target_sparsity": 0.5, "layers": ["nope"]}, ValueError, "No prunable layer named \\['nope'\\]"),
        (
            {"target_sparsity": 0.3, "schedule": pruning.PolynomialDecay(initial_sparsity=0.5)},
            ValueError,
            "must not exceed",
        ),
    ],
)
def test_bad_prune_arguments_fail_clearly_and_change_nothing(kwargs, error, match):
    model = _model("smart")
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(error, match=match):
        pruning.prune(model, **kwargs)
    for value, weight in zip(before, model.weights):
        np.testing.assert_array_equal(value, weight.numpy())
    assert pruning.pruning_level(model) is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"begin_step": 5, "end_step": 5}, "end_step"),
        ({"frequency": 0}, "frequency"),
        ({"power": 0}, "power"),
        ({"initial_sparsity": 1.0}, "initial_sparsity"),
    ],
)
def test_bad_schedules_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pruning.PolynomialDecay(**kwargs)


def test_a_model_without_prunable_layers_is_rejected():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.ReLU()(inputs))
    with pytest.raises(ValueError, match="no prunable layers"):
        pruning.prune(model, 0.5)


# --- TF-MOT bridge ---------------------------------------------------------------------------------


@pytest.mark.skipif(_compat.IS_LEGACY, reason="Keras 3 only: the bridge must refuse without importing TF-MOT")
def test_tfmot_bridge_on_keras3_says_what_to_do_and_imports_nothing():
    smart = _model("smart")
    for bridge in (pruning.prune_low_magnitude, pruning.quantize_aware):
        with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1.*keras_smart.pruning.prune"):
            bridge(smart)
    assert "tensorflow_model_optimization" not in sys.modules


@pytest.mark.slow
@pytest.mark.skipif(not _compat.IS_LEGACY, reason="TF-MOT accepts tf_keras models only (TF_USE_LEGACY_KERAS=1)")
def test_tfmot_bridge_prunes_trains_adversarially_and_strips_to_a_smart_model():
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    smart = _model("smart", models.sequential_model)  # small: the adversarial train step traces fast
    keras_smart.set_tradeoff(smart, 0.7)
    masks_before = keras_smart.get_masks(smart)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.2, 0.6, begin_step=0, end_step=2, frequency=1)
    pruned = pruning.prune_low_magnitude(smart, pruning_schedule=schedule)
    assert isinstance(pruned, keras_smart.SmartModel)
    assert keras_smart.get_tradeoff(pruned) == pytest.approx(0.7), "the trade-off is carried over"
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(smart, batch=12), np.arange(12) % 3
    attack = keras_smart.AttackConfig(kind="fgsm", eps=0.1)
    history = pruned.fit(
        x,
        y,
        batch_size=6,
        epochs=1,
        verbose=0,
        callbacks=[keras_smart.callbacks.AdversarialCallback(attack=attack), tfmot.sparsity.keras.UpdatePruningStep()],
    )
    assert "adv_accuracy" in history.history
    stripped = pruning.strip_pruning(pruned)
    assert isinstance(stripped, keras_smart.SmartModel)
    assert type(stripped.get_layer("conv")) is cl.DualMaskConv2D
    assert keras_smart.get_tradeoff(stripped) == pytest.approx(0.7)
    for name, value in pruning.kernel_sparsity(stripped).items():
        assert value == pytest.approx(0.6, abs=0.03), name
    _assert_zero_on_every_path(stripped)
    masks_after = keras_smart.get_masks(stripped)
    for layer_name, layer_masks in masks_after.items():  # masks only lost the pruned weights
        for mask_name, mask in layer_masks.items():
            assert np.all(mask <= masks_before[layer_name][mask_name]), (layer_name, mask_name)
    np.testing.assert_allclose(stripped(x), pruned(x), atol=1e-5)
    with pytest.raises(ValueError, match="wrapped for TF-MOT pruning"):
        pruning.prune(pruned, 0.5)


@pytest.mark.slow
@pytest.mark.skipif(not _compat.IS_LEGACY, reason="TF-MOT accepts tf_keras models only (TF_USE_LEGACY_KERAS=1)")
def test_prune_preserving_qat_keeps_the_zeros_and_exports_int8(tmp_path):
    pytest.importorskip("tensorflow_model_optimization")
    from keras_smart import export  # pylint: disable=g-import-not-at-top

    smart = _model("smart")
    pruning.prune(smart, 0.6)
    qat = pruning.quantize_aware(smart, tradeoff=1.0)
    assert not isinstance(qat, keras_smart.SmartModel)
    assert any(type(l).__name__ == "QuantizeWrapperV2" for l in qat.layers)
    # TF-MOT's prune-preserving scheme leaves DepthwiseConv2D out (its _DISABLE_PRUNE_PRESERVE).
    zeros = {
        w.name: w.numpy() == 0
        for l in qat.layers
        for w in l.weights
        if w.name.split(":")[0].endswith("kernel") and "depthwise" not in w.name
    }
    assert zeros and all(z.mean() >= 0.59 for z in zeros.values())
    qat.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(smart, batch=16), np.arange(16) % 4
    qat.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for layer in qat.layers:
        for w in layer.weights:
            if w.name in zeros:
                assert np.all(w.numpy()[zeros[w.name]] == 0), w.name
    with pytest.raises(ValueError, match="quantize='int8'"):
        export.to_tflite(qat, tmp_path / "qat.tflite")
    result = export.to_tflite(qat, tmp_path / "qat.tflite", quantize="int8", check_data=x, min_agreement=0.9)
    assert "QUANTIZE" in result.ops and result.agreement >= 0.9
