"""Models beyond image CNNs: every layer family convert swaps converts exactly, strips, counts, prunes
and exports (Conv1D, grouped Conv2D, Conv3D, Conv2DTranspose, EinsumDense, MultiHeadAttention,
LayerNormalization: a ConvNeXt block, a Conv1D model, a decoder head, a Conv3D model, a small ViT;
and keras.applications' MobileNetV3Small)."""

import numpy as np
import pytest

import keras_smart
from keras_smart import _compat
from keras_smart import export
from keras_smart import layers as cl
from keras_smart import pruning
from keras_smart import registry
from tests import models
from tests.models import keras

ARCHITECTURES = sorted(models.ARCHITECTURES)
NOISY = ("float", "floats")


def _relative_gap(got, expected):
    expected = np.asarray(expected)
    return models.max_abs_diff(got, expected) / max(1.0, float(np.max(np.abs(expected))))


def _outputs(model, x):
    with cl.expected_noise():
        return model(x).numpy()


def _with_random_paths(model, method, seed=0):
    smart = keras_smart.convert(model, method, seed=seed) if method in NOISY else keras_smart.convert(model, method)
    models.randomize_conditional_state(smart, seed=seed + 1)  # masks, adversarial normalisation, noise
    return smart


@pytest.mark.parametrize("method", models.METHODS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_converts_exactly(arch, method):
    model = models.ARCHITECTURES[arch]()
    x = models.inputs_for(model, batch=4)
    smart = keras_smart.convert(model, method=method)
    assert _relative_gap(smart(x), model(x)) <= 1e-5


@pytest.mark.parametrize("method", models.METHODS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_strip_equals_the_smart_model_at_both_ends_and_files_round_trip(arch, method, tmp_path):
    model = models.ARCHITECTURES[arch]()
    x = models.inputs_for(model, batch=4, seed=1)
    smart = _with_random_paths(model, method)
    ends = []
    for tradeoff in (0.0, 1.0):
        keras_smart.set_tradeoff(smart, tradeoff)
        expected = _outputs(smart, x)
        ends.append(expected)
        plain = keras_smart.strip(smart, tradeoff=tradeoff)
        assert [type(l) for l in plain.layers] == [type(l) for l in model.layers]
        assert _relative_gap(plain(x), expected) <= 1e-5, tradeoff
    if method == "smart":  # noisy paths differ only in normalisation once the noise is at its expectation
        assert models.max_abs_diff(*ends) > 1e-4, "the two paths compute the same function"
    path = str(tmp_path / "smart.keras")
    smart.save(path)
    clone = keras.models.clone_model(smart)
    clone.set_weights(smart.get_weights())
    for other in (keras.models.load_model(path), clone):
        keras_smart.set_tradeoff(other, 1.0)
        assert _relative_gap(_outputs(other, x), ends[1]) <= 1e-5


def _kernel_weights(model):
    return sum(
        int(np.prod(w.shape)) for l in _compat.flatten_layers(model) for w in l.weights
        if _compat.weight_name(w) in registry.kernel_names(l)
    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_count_nonzero_counts_every_kernel_and_its_macs(arch):
    model = models.ARCHITECTURES[arch]()
    smart = keras_smart.convert(model, "smart")
    keras_smart.design_masks(smart, score="random", density=(0.5, 0.3), seed=0)
    counts = keras_smart.count_nonzero(smart)
    assert counts.total == _kernel_weights(model) > 0
    assert counts.clean == pytest.approx(0.5 * counts.total, rel=0.05)
    assert counts.adv == pytest.approx(0.3 * counts.total, rel=0.05)
    assert counts.macs_dense and counts.macs_clean < counts.macs_dense
    assert counts.unconverted == 0 and counts.unconverted_layers == {}


def test_conv1d_macs_are_each_kernel_weight_times_its_output_positions():
    counts = keras_smart.count_nonzero(keras_smart.convert(models.conv1d_model(), "smart"))
    # causal: 32 positions x (5*4*16); strided valid: 15 x (3*16*32); dense: 480*6.
    assert counts.layers["causal"]["macs_dense"] == 32 * 320
    assert counts.layers["strided"]["macs_dense"] == 15 * 1536
    assert counts.macs_dense == 32 * 320 + 15 * 1536 + 480 * 6


def test_transposed_convolutions_count_input_positions():
    counts = keras_smart.count_nonzero(keras_smart.convert(models.decoder_head_model(), "smart"))
    assert counts.layers["up1"]["macs_dense"] == 6 * 6 * (3 * 3 * 8 * 8)
    assert counts.layers["up2"]["macs_dense"] == 12 * 12 * (3 * 3 * 8 * 4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_native_pruning_zeroes_every_path(arch):
    model = models.ARCHITECTURES[arch]()
    smart = _with_random_paths(model, "smart")
    pruning.prune(smart, 0.5)
    sparsity = pruning.kernel_sparsity(smart)
    assert set(sparsity) == {
        f"{l.name}/{k}" for l in _compat.flatten_layers(smart) for k in registry.kernel_names(l)
    }
    assert all(s >= 0.5 - 0.02 for s in sparsity.values()), sparsity
    x = models.inputs_for(model, batch=2)
    assert np.isfinite(smart(x).numpy()).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_exports_to_litert_with_builtin_ops(arch, tmp_path):
    pytest.importorskip("ai_edge_litert.interpreter")
    smart = _with_random_paths(models.ARCHITECTURES[arch](), "smart")
    results = [export.to_tflite(smart, tmp_path / "runtime.tflite", runtime_tradeoff=True)]
    if arch == "conv3d":  # LiteRT's CONV_3D has no groups: only the runtime form (one per group) runs
        with pytest.raises(ValueError, match=r"\['grouped3d'\] are grouped Conv3D.*runtime_tradeoff=True"):
            export.to_tflite(smart, tmp_path / "baked.tflite", tradeoff=1.0)
    else:
        results.append(export.to_tflite(smart, tmp_path / "baked.tflite", tradeoff=1.0))
    for result in results:
        assert result.max_abs_diff <= 1e-4
        assert all(op.isupper() and not op.startswith("FLEX") and op != "CUSTOM" for op in result.ops), result.ops


@pytest.mark.skipif(not _compat.IS_LEGACY, reason="TF-MOT accepts tf_keras models only (TF_USE_LEGACY_KERAS=1)")
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tfmot_prunes_the_new_layers(arch):
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    smart = keras_smart.convert(models.ARCHITECTURES[arch](), "smart")
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(smart, pruning_schedule=schedule)
    x = models.inputs_for(smart, batch=4)
    pruned.compile("sgd", "mse")
    pruned.fit(x, pruned.predict(x, verbose=0), epochs=1, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    sparsity = pruning.kernel_sparsity(stripped)
    assert sparsity and all(s == pytest.approx(0.5, abs=0.05) for s in sparsity.values()), sparsity


@pytest.mark.slow
def test_mobilenet_v3_small_converts_exactly_and_strips_at_both_ends():
    model = models.mobilenet_v3_small()
    x = models.inputs_for(model, batch=2)
    smart = keras_smart.convert(model, "smart")
    assert _relative_gap(smart(x), model(x)) <= 1e-5
    keras_smart.design_masks(smart, score="random", density=(0.5, 0.3), seed=0)
    for tradeoff in (0.0, 1.0):
        keras_smart.set_tradeoff(smart, tradeoff)
        assert _relative_gap(keras_smart.strip(smart, tradeoff=tradeoff)(x), smart(x)) <= 1e-5


@pytest.mark.skipif(not _compat.IS_LEGACY, reason="TF-MOT accepts tf_keras models only (TF_USE_LEGACY_KERAS=1)")
def test_tfmot_refuses_a_plain_einsum_dense_by_name_with_the_ways_forward():
    pytest.importorskip("tensorflow_model_optimization")
    inputs = keras.Input((4, 6))
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 5), name="proj")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    smart = keras_smart.convert(keras.Model(inputs, x), "oat")  # OAT keeps kernels plain
    with pytest.raises(ValueError, match=r"cannot prune .*proj \(EinsumDense\).*keras_smart.pruning.prune"):
        pruning.prune_low_magnitude(smart)
