"""The TF-MOT bridge (tf_keras): wrappers around a SmartModel whose schedule counts optimizer steps; QAT."""

import sys

import numpy as np
import pytest

import keras_smart
from keras_smart import _compat
from keras_smart import layers as cl
from keras_smart import pruning
from tests import models
from tests.models import keras
from tests.pruning import common

_TF_KERAS_ONLY = pytest.mark.skipif(
    not _compat.IS_LEGACY, reason="TF-MOT accepts tf_keras models only (TF_USE_LEGACY_KERAS=1)"
)


@pytest.mark.skipif(_compat.IS_LEGACY, reason="Keras 3 only: the bridge must refuse without importing TF-MOT")
def test_tfmot_bridge_on_keras3_says_what_to_do_and_imports_nothing():
    smart = common.model("smart")
    for bridge in (pruning.prune_low_magnitude, pruning.quantize_aware):
        with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1.*keras_smart.pruning.prune"):
            bridge(smart)
    assert "tensorflow_model_optimization" not in sys.modules


@pytest.mark.slow
@_TF_KERAS_ONLY
def test_tfmot_bridge_counts_optimizer_steps_trains_adversarially_and_strips_to_a_smart_model():
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    smart = common.model("smart", models.sequential_model)  # small: the adversarial train step traces fast
    keras_smart.set_tradeoff(smart, 0.7)
    masks_before = keras_smart.get_masks(smart)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.2, 0.9, begin_step=0, end_step=12, frequency=1)
    pruned = pruning.prune_low_magnitude(smart, pruning_schedule=schedule)
    assert isinstance(pruned, keras_smart.SmartModel)
    assert keras_smart.get_tradeoff(pruned) == pytest.approx(0.7), "the trade-off is carried over"
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(smart, batch=24), np.arange(24) % 3
    attack = keras_smart.AttackConfig(kind="fgsm", eps=0.1)
    history = pruned.fit(
        x,
        y,
        batch_size=6,
        epochs=1,
        verbose=0,
        callbacks=[keras_smart.callbacks.AdversarialCallback(attack=attack), pruning.UpdatePruning()],
    )
    assert "adv_accuracy" in history.history
    steps = int(pruned.optimizer.iterations.numpy())
    assert steps == 4
    assert {int(l.pruning_step.numpy()) for l in pruned.layers if hasattr(l, "pruning_step")} == {steps}
    stripped = pruning.strip_pruning(pruned)
    assert isinstance(stripped, keras_smart.SmartModel)
    assert type(stripped.get_layer("conv")) is cl.DualMaskConv2D
    assert keras_smart.get_tradeoff(stripped) == pytest.approx(0.7)
    # Three training-mode calls per adversarial step; the schedule still reads the optimizer's step.
    reached = float(schedule(steps)[1])
    sizes = {name: kernel.size for name, kernel in common.kernels(stripped).items()}
    for name, value in pruning.kernel_sparsity(stripped).items():
        assert value == pytest.approx(reached, abs=1.0 / sizes[name]), name
    common.assert_zero_on_every_path(stripped)
    masks_after = keras_smart.get_masks(stripped)
    for layer_name, layer_masks in masks_after.items():  # masks only lost the pruned weights
        for mask_name, mask in layer_masks.items():
            assert np.all(mask <= masks_before[layer_name][mask_name]), (layer_name, mask_name)
    np.testing.assert_allclose(stripped(x), pruned(x), atol=1e-5)
    with pytest.raises(ValueError, match="wrapped for TF-MOT pruning"):
        pruning.prune(pruned, 0.5)


@_TF_KERAS_ONLY
def test_the_bridge_says_which_callback_its_schedules_need():
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    pruned = pruning.prune_low_magnitude(keras_smart.convert(models.sequential_model(), "smart"))
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(pruned, batch=4), np.arange(4) % 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="pass keras_smart.pruning.UpdatePruning"):
        pruned.fit(x, y, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])


@_TF_KERAS_ONLY
def test_native_and_tfmot_pruning_refuse_each_other():
    pytest.importorskip("tensorflow_model_optimization")
    smart = common.model("smart")
    pruning.prune(smart, 0.5)
    with pytest.raises(ValueError, match="already pruned by keras_smart.pruning.prune"):
        pruning.prune_low_magnitude(smart)


@pytest.mark.slow
@_TF_KERAS_ONLY
def test_prune_preserving_qat_keeps_the_zeros_and_exports_int8(tmp_path):
    pytest.importorskip("tensorflow_model_optimization")
    from keras_smart import export  # pylint: disable=g-import-not-at-top

    smart = common.model("smart")
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
