"""to_tflite: checked LiteRT files for every method, baked and runtime trade-off, float and quantized."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import export
from keras_smart import pruning
from keras_smart.export import conversion
from keras_smart.export import verify
from keras_smart.layers import base
from tests import models
from tests.export import common
from tests.layers import cases
from tests.models import keras


@pytest.mark.parametrize("variant", sorted(common.VARIANTS))
def test_baked_and_runtime_files_match_keras_with_builtin_ops_only(variant, tmp_path):
    smart = common.converted(variant)
    x = models.inputs_for(smart, batch=16, seed=5)  # not the check inputs export used
    baked = export.to_tflite(smart, tmp_path / "baked.tflite", tradeoff=1.0)
    assert baked.max_abs_diff <= 1e-4 and baked.tradeoff == 1.0 and not baked.runtime_tradeoff
    assert models.max_abs_diff(common.run_file(baked.path, x), common.keras_outputs(smart, x, 1.0)) <= 1e-4
    runtime = export.to_tflite(smart, tmp_path / "runtime.tflite", runtime_tradeoff=True)
    assert runtime.runtime_tradeoff and runtime.tradeoff is None and runtime.max_abs_diff <= 1e-4
    for tradeoff in (0.0, 0.3, 1.0):
        got = common.run_file(runtime.path, x, tradeoff)
        assert models.max_abs_diff(got, common.keras_outputs(smart, x, tradeoff)) <= 1e-4, tradeoff
    # The two paths really differ, so the runtime input is doing its job.
    assert models.max_abs_diff(common.run_file(runtime.path, x, 0.0), common.run_file(runtime.path, x, 1.0)) > 1e-3
    for result in (baked, runtime):
        ops = common.operator_names(result.path)
        assert ops == set(result.ops)
        assert all(op.isupper() and not op.startswith("FLEX") and op != "CUSTOM" for op in ops), ops
    assert {i["name"] for i in runtime.inputs} == {"input", "tradeoff"}
    assert common.files(tmp_path) == ["baked.tflite", "runtime.tflite"], "no temporary file is left"


_DUAL_MASK_CLASSES = [c for c in cases.CLASSES if c.__name__.startswith("DualMask")]


@pytest.mark.parametrize("mode", ["switch", "blend", "noise"])
@pytest.mark.parametrize("cls", _DUAL_MASK_CLASSES, ids=[c.__name__ for c in _DUAL_MASK_CLASSES])
def test_separate_paths_computes_what_the_layer_computes(cls, mode):
    """The export form (one constant kernel per path, outputs blended) is the same function."""
    source, x = cases.source_and_input(cls)
    layer = cls.from_layer(source, tradeoff_mode=mode)
    models.randomize_conditional_state(keras.Sequential([layer]), seed=2)
    for tradeoff in (0.0, 0.3, 1.0):
        with base.expected_noise(), base.tradeoff_override(tradeoff):
            expected = cases.call(layer, x).numpy()
            with base.separate_paths():
                got = cases.call(layer, x).numpy()
        assert models.max_abs_diff(got, expected) <= 1e-5, tradeoff
    if mode == "noise":  # noise must be at its expectation, or the two paths are not constants
        with base.separate_paths(), base.tradeoff_override(1.0), pytest.raises(ValueError, match="expected_noise"):
            cases.call(layer, x)


def test_runtime_file_stores_each_path_kernel_once_not_weights_and_masks(tmp_path):
    """SMART's runtime file holds two folded kernels per layer: about twice, not three times, the weights."""
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(256, activation="relu", name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden))
    smart = keras_smart.convert(model, "smart")
    keras_smart.design_masks(smart, score="random", density=(0.5, 0.5), seed=0)
    baked = export.to_tflite(smart, tmp_path / "b.tflite", tradeoff=1.0).size_bytes
    runtime = export.to_tflite(smart, tmp_path / "r.tflite", runtime_tradeoff=True).size_bytes
    weights_bytes = 4 * (16 * 256 + 256 * 10)
    assert runtime - baked == pytest.approx(weights_bytes, rel=0.15), (baked, runtime)
    assert runtime <= 2.2 * baked


def test_a_pruned_model_exports_with_its_zeros(tmp_path):
    smart = common.converted("smart")
    pruning.prune(smart, 0.6)
    result = export.to_tflite(smart, tmp_path / "pruned.tflite", tradeoff=0.0)
    interpreter = common.litert.Interpreter(
        model_path=result.path,
        experimental_op_resolver_type=common.litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    dense_kernels = [
        interpreter.get_tensor(t["index"])
        for t in interpreter.get_tensor_details()
        if len(t["shape"]) == 2 and tuple(t["shape"]) in {(16, 6), (4, 16)}  # fc1, logits: (out, in)
    ]
    assert len(dense_kernels) == 2
    for kernel in dense_kernels:
        assert (kernel == 0).mean() >= 0.59


def test_check_inputs_come_from_arrays_or_datasets_up_to_max_samples(tmp_path):
    plain = models.conv_block_model()
    x = models.inputs_for(plain, batch=40, seed=1)
    from_array = export.to_tflite(plain, tmp_path / "a.tflite", check_data=x, max_samples=25)
    assert from_array.check_samples == 25
    pairs = tf.data.Dataset.from_tensor_slices((x, np.zeros(40, "int32"))).batch(16)
    assert export.to_tflite(plain, tmp_path / "d.tflite", check_data=pairs).check_samples == 40
    assert export.to_tflite(plain, tmp_path / "r.tflite").check_samples == 32  # random inputs
    with pytest.raises(ValueError, match="expects inputs of shape.*`check_data` holds"):
        export.to_tflite(plain, tmp_path / "bad.tflite", check_data=np.zeros((4, 5, 5, 3), "float32"))
    assert common.files(tmp_path) == ["a.tflite", "d.tflite", "r.tflite"]


@pytest.fixture(scope="module")
def digits_cnn():
    """A small SMART CNN trained for a few seconds on the embedded digits (both paths fine-tuned)."""
    keras.utils.set_random_seed(0)
    x, y = keras_smart.data.digits("train")
    x_test, _ = keras_smart.data.digits("test")
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(32, 3, strides=2, name="conv2")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    plain = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    plain.compile(keras.optimizers.Adam(3e-3), loss)
    plain.fit(x, y, batch_size=64, epochs=4, verbose=0)
    smart = keras_smart.convert(plain, "smart")
    keras_smart.design_masks(smart, score="magnitude", density=(0.8, 0.6))
    smart.compile(keras.optimizers.Adam(1e-3), loss)
    for tradeoff in (0.0, 1.0):  # fine-tune each path with its masks
        keras_smart.set_tradeoff(smart, tradeoff)
        smart.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return smart, x[:200], x_test[:300]


@pytest.mark.slow
def test_int8_files_agree_with_keras_on_digits(digits_cnn, tmp_path):
    smart, calibration, check = digits_cnn
    float_size = export.to_tflite(smart, tmp_path / "f32.tflite", tradeoff=1.0).size_bytes
    for name, options in (
        ("baked", {"tradeoff": 1.0}),
        ("runtime", {"runtime_tradeoff": True, "check_tradeoffs": (0.0, 1.0)}),
    ):
        result = export.to_tflite(
            smart, tmp_path / f"{name}.tflite", quantize="int8", representative_data=calibration, check_data=check,
            **options,
        )
        assert result.agreement >= 0.98 and result.check_samples == 300
        assert {"CONV_2D", "QUANTIZE", "DEQUANTIZE"} <= set(result.ops)
        for tradeoff in (0.0, 1.0) if name == "runtime" else (1.0,):
            got = common.run_file(result.path, check, tradeoff if name == "runtime" else None)
            expected = common.keras_outputs(smart, check, tradeoff)
            agreement = np.mean(np.argmax(got, -1) == np.argmax(expected, -1))
            assert agreement >= 0.98, (name, tradeoff, agreement)
    assert os.path.getsize(tmp_path / "baked.tflite") < 0.6 * float_size


def test_int8_io_file_takes_and_gives_int8(digits_cnn, tmp_path):
    smart, calibration, check = digits_cnn
    result = export.to_tflite(
        smart, tmp_path / "io.tflite", tradeoff=0.0, quantize="int8", int8_io=True,
        representative_data=calibration, check_data=check,
    )
    assert result.inputs[0]["dtype"] == "int8" and result.inputs[0]["quantization"]["scale"] > 0
    assert result.outputs[0]["dtype"] == "int8"
    assert result.agreement >= 0.98


@pytest.mark.parametrize("quantize", ["dynamic", "float16"])
def test_weight_quantized_files_are_checked_by_top1_agreement(quantize, digits_cnn, tmp_path):
    smart, _, check = digits_cnn
    result = export.to_tflite(smart, tmp_path / "q.tflite", runtime_tradeoff=True, quantize=quantize, check_data=check)
    assert result.quantize == quantize and result.agreement >= 0.98
    assert result.check_tradeoffs == (0.0, 0.5, 1.0)


def test_an_8bit_file_may_pick_either_of_two_logits_closer_than_one_8bit_step():
    """Logits spanning 25.5 resolve 0.1 at 8 bits: a flip inside that is a tie, one past it a disagreement."""
    expected = np.array([[10.0, 9.95, -15.5], [10.0, 9.8, -15.5]], np.float32)
    swapped = expected[:, [1, 0, 2]]
    tie = verify.tie_tolerance(expected, "int8")
    assert tie == pytest.approx(0.1) and verify.tie_tolerance(expected, "dynamic") == tie
    assert verify.compare_outputs(swapped, expected, tie)[1:] == (1, 2)
    assert verify.tie_tolerance(expected, "float16") == verify.tie_tolerance(expected, None) == 0.0
    assert verify.compare_outputs(swapped, expected)[1:] == (0, 2)


def test_a_failed_check_leaves_no_file_and_keeps_an_existing_one(tmp_path):
    smart = common.converted("smart")
    with pytest.raises(export.ExportError, match="differs from the Keras model.*No file was written"):
        export.to_tflite(smart, tmp_path / "new.tflite", tradeoff=1.0, atol=1e-12)
    assert common.files(tmp_path) == []
    existing = tmp_path / "old.tflite"
    existing.write_bytes(b"previous export")
    with pytest.raises(export.ExportError):
        export.to_tflite(smart, existing, tradeoff=0.0, atol=1e-12)
    assert existing.read_bytes() == b"previous export"
    assert common.files(tmp_path) == ["old.tflite"]


class _CumulativeProduct(keras.layers.Layer):
    """A layer whose TensorFlow op (Cumprod) has no LiteRT builtin."""

    def call(self, inputs):
        return tf.math.cumprod(inputs, axis=-1)


def _cumprod_model():
    inputs = keras.Input((5,))
    return keras.Model(inputs, keras.layers.Dense(3)(_CumulativeProduct()(inputs)))


def test_a_graph_that_needs_flex_ops_is_refused_and_leaves_no_file(tmp_path):
    with pytest.raises(export.ExportError, match="builtin"):
        export.to_tflite(_cumprod_model(), tmp_path / "flex.tflite")
    assert common.files(tmp_path) == []


def _convert_saved(model, options, tmp_path, configure):
    """Converts `model` like export does, with `configure(converter)` changing the converter."""
    function, _ = conversion.serving_function(model, options)
    module = tf.Module()
    module.weights_ = [_compat.tf_variable(v) for v in model.weights]
    module.serve = function
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures=function.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    configure(converter)
    return converter.convert()


def test_a_file_with_custom_operators_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    """The operator check reads the file itself: a custom op that slipped through conversion is named."""

    def with_custom_ops(model, options, representative):
        def allow_custom_ops(converter):
            converter.allow_custom_ops = True

        return _convert_saved(model, options, tmp_path, allow_custom_ops)

    monkeypatch.setattr(conversion, "tflite_bytes", with_custom_ops)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(export.ExportError, match=r"non-builtin operators \['Cumprod'\]"):
        export.to_tflite(_cumprod_model(), out / "custom.tflite")
    assert common.files(out) == []


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_a_file_the_default_delegate_cannot_prepare_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    """int8 with sparse tensor encoding (EXPERIMENTAL_SPARSITY) fails to prepare under XNNPACK."""
    inputs = keras.Input((16,))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Dense(256, activation="relu")(inputs)))
    pruning.prune(model, 0.8)
    x = np.random.default_rng(0).random((32, 16)).astype("float32")

    def sparse_int8(model, options, representative):
        def configure(converter):
            converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
            converter.representative_dataset = conversion.representative_dataset(representative, options)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

        return _convert_saved(model, options, tmp_path, configure)

    monkeypatch.setattr(conversion, "tflite_bytes", sparse_int8)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(export.ExportError, match="could not load or prepare.*XNNPACK"):
        export.to_tflite(model, out / "sparse.tflite", quantize="int8", representative_data=x)
    assert common.files(out) == []

