"""to_tflite and bundle: checked LiteRT files for every method, baked and runtime trade-off, float and int8."""

import hashlib
import json
import os
import stat
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import export
from keras_smart import pruning
from keras_smart.layers import base
from tests import models
from tests.layers import cases
from tests.models import keras

litert = pytest.importorskip("ai_edge_litert.interpreter")

_VARIANTS = {
    "smart": ("smart", {}),
    "smart-blend": ("smart", {"tradeoff_mode": "blend"}),
    "float": ("float", {}),
    "floats": ("floats", {}),
    "oat": ("oat", {}),
}


def _converted(variant, seed=0):
    method, options = _VARIANTS[variant]
    smart = keras_smart.convert(models.conv_block_model(), method, **options)
    models.randomize_conditional_state(smart, seed=seed)  # each path computes its own function
    return smart


def _run_file(path, x, lam=None):
    """Runs a file in LiteRT's interpreter (default XNNPACK delegate), independently of export's check."""
    runner = litert.Interpreter(model_path=path).get_signature_runner("serving_default")
    feeds = {"input": x}
    if lam is not None:
        feeds["tradeoff"] = np.array([lam], np.float32)
    return runner(**feeds)["output"]


def _keras(model, x, lam):
    with base.expected_noise(), base.tradeoff_override(lam):
        return model(x, training=False).numpy()


def _builtin_ops(path):
    interpreter = litert.Interpreter(
        model_path=path, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return {op["op_name"] for op in interpreter._get_ops_details()}  # pylint: disable=protected-access


def _files(directory):
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_baked_and_runtime_files_match_keras_with_builtin_ops_only(variant, tmp_path):
    smart = _converted(variant)
    x = models.inputs_for(smart, batch=16, seed=5)  # not the check inputs export used
    baked = export.to_tflite(smart, tmp_path / "baked.tflite", tradeoff=1.0)
    assert baked.max_abs_diff <= 1e-4 and baked.tradeoff == 1.0 and not baked.runtime_tradeoff
    assert models.max_abs_diff(_run_file(baked.path, x), _keras(smart, x, 1.0)) <= 1e-4
    runtime = export.to_tflite(smart, tmp_path / "runtime.tflite", runtime_tradeoff=True)
    assert runtime.runtime_tradeoff and runtime.tradeoff is None and runtime.max_abs_diff <= 1e-4
    for lam in (0.0, 0.3, 1.0):
        assert models.max_abs_diff(_run_file(runtime.path, x, lam), _keras(smart, x, lam)) <= 1e-4, lam
    # The two paths really differ, so the runtime input is doing its job.
    assert models.max_abs_diff(_run_file(runtime.path, x, 0.0), _run_file(runtime.path, x, 1.0)) > 1e-3
    for result in (baked, runtime):
        ops = _builtin_ops(result.path)
        assert ops == set(result.ops)
        assert all(op.isupper() and not op.startswith("FLEX") and op != "CUSTOM" for op in ops), ops
    assert {i["name"] for i in runtime.inputs} == {"input", "tradeoff"}
    assert _files(tmp_path) == ["baked.tflite", "runtime.tflite"], "no temporary file is left"


_DUAL_MASK_CLASSES = [c for c in cases.CLASSES if c.__name__.startswith("DualMask")]


@pytest.mark.parametrize("mode", ["switch", "blend", "noise"])
@pytest.mark.parametrize("cls", _DUAL_MASK_CLASSES, ids=[c.__name__ for c in _DUAL_MASK_CLASSES])
def test_separate_paths_computes_what_the_layer_computes(cls, mode):
    """The export form (one constant kernel per path, outputs blended) is the same function."""
    source, x = cases.source_and_input(cls)
    layer = cls.from_layer(source, tradeoff_mode=mode)
    models.randomize_conditional_state(keras.Sequential([layer]), seed=2)
    for lam in (0.0, 0.3, 1.0):
        with base.expected_noise(), base.tradeoff_override(lam):
            expected = cases.call(layer, x).numpy()
            with base.separate_paths():
                got = cases.call(layer, x).numpy()
        assert models.max_abs_diff(got, expected) <= 1e-5, lam
    if mode == "noise":  # noise must be at its expectation, or the two paths are not constants
        with base.separate_paths(), base.tradeoff_override(1.0), pytest.raises(ValueError, match="expected_noise"):
            cases.call(layer, x)


def test_runtime_file_stores_each_path_kernel_once_not_weights_and_masks():
    """SMART's runtime file holds two folded kernels per layer: about twice, not three times, the weights."""
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(256, activation="relu", name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden))
    smart = keras_smart.convert(model, "smart")
    keras_smart.design_masks(smart, score="random", density=(0.5, 0.5), seed=0)
    import tempfile  # pylint: disable=g-import-not-at-top

    with tempfile.TemporaryDirectory() as d:
        baked = export.to_tflite(smart, os.path.join(d, "b.tflite"), tradeoff=1.0).size_bytes
        runtime = export.to_tflite(smart, os.path.join(d, "r.tflite"), runtime_tradeoff=True).size_bytes
    weights_bytes = 4 * (16 * 256 + 256 * 10)
    assert runtime - baked == pytest.approx(weights_bytes, rel=0.15), (baked, runtime)
    assert runtime <= 2.2 * baked


def test_a_pruned_model_exports_with_its_zeros(tmp_path):
    smart = _converted("smart")
    pruning.prune(smart, 0.6)
    result = export.to_tflite(smart, tmp_path / "pruned.tflite", tradeoff=0.0)
    interpreter = litert.Interpreter(
        model_path=result.path, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
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
    for lam in (0.0, 1.0):  # fine-tune each path with its masks
        keras_smart.set_tradeoff(smart, lam)
        smart.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return smart, x[:200], x_test[:300]


@pytest.mark.slow
def test_int8_files_agree_with_keras_on_digits(digits_cnn, tmp_path):
    smart, calibration, check = digits_cnn
    float_size = export.to_tflite(smart, tmp_path / "f32.tflite", tradeoff=1.0).size_bytes
    for name, options in (("baked", {"tradeoff": 1.0}), ("runtime", {"runtime_tradeoff": True, "check_tradeoffs": (0.0, 1.0)})):
        result = export.to_tflite(
            smart, tmp_path / f"{name}.tflite", quantize="int8", representative_data=calibration, check_data=check, **options
        )
        assert result.agreement >= 0.98 and result.check_samples == 300
        assert {"CONV_2D", "QUANTIZE", "DEQUANTIZE"} <= set(result.ops)
        for lam in (0.0, 1.0) if name == "runtime" else (1.0,):
            got = _run_file(result.path, check, lam if name == "runtime" else None)
            agreement = np.mean(np.argmax(got, -1) == np.argmax(_keras(smart, check, lam), -1))
            assert agreement >= 0.98, (name, lam, agreement)
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


def test_a_failed_check_leaves_no_file_and_keeps_an_existing_one(tmp_path):
    smart = _converted("smart")
    with pytest.raises(export.ExportError, match="differs from the Keras model.*No file was written"):
        export.to_tflite(smart, tmp_path / "new.tflite", tradeoff=1.0, atol=1e-12)
    assert _files(tmp_path) == []
    existing = tmp_path / "old.tflite"
    existing.write_bytes(b"previous export")
    with pytest.raises(export.ExportError):
        export.to_tflite(smart, existing, tradeoff=0.0, atol=1e-12)
    assert existing.read_bytes() == b"previous export"
    assert _files(tmp_path) == ["old.tflite"]


class _CumulativeProduct(keras.layers.Layer):
    """A layer whose TensorFlow op (Cumprod) has no LiteRT builtin."""

    def call(self, inputs):
        return tf.math.cumprod(inputs, axis=-1)


def test_a_graph_that_needs_flex_ops_is_refused_and_leaves_no_file(tmp_path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3)(_CumulativeProduct()(inputs)))
    with pytest.raises(export.ExportError, match="builtin"):
        export.to_tflite(model, tmp_path / "flex.tflite")
    assert _files(tmp_path) == []


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_a_file_the_default_delegate_cannot_prepare_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    """int8 with sparse tensor encoding (EXPERIMENTAL_SPARSITY) fails to prepare under XNNPACK."""
    inputs = keras.Input((16,))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Dense(256, activation="relu")(inputs)))
    pruning.prune(model, 0.8)
    x = np.random.default_rng(0).random((32, 16)).astype("float32")

    def sparse_int8(model, options, representative):
        function, _ = export._serving_function(model, options)  # pylint: disable=protected-access
        module = tf.Module()
        module.weights_ = [_compat.tf_variable(v) for v in model.weights]
        module.serve = function
        tf.saved_model.save(module, str(tmp_path / "saved"), signatures=function.get_concrete_function())
        converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        converter.representative_dataset = export._representative_dataset(representative, options)  # pylint: disable=protected-access
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()

    monkeypatch.setattr(export, "_convert", sparse_int8)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(export.ExportError, match="could not load or prepare.*XNNPACK"):
        export.to_tflite(model, out / "sparse.tflite", quantize="int8", representative_data=x)
    assert _files(out) == []


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"tradeoff": 1.5}, ValueError, "must be in \\[0, 1\\].*tradeoff=1.5"),
        ({"tradeoff": -0.1}, ValueError, "must be in \\[0, 1\\]"),
        ({"tradeoff": "1"}, TypeError, "real number"),
        ({"quantize": "int8"}, ValueError, "needs `representative_data`"),
        ({"tradeoff": 0.5, "runtime_tradeoff": True}, ValueError, "not both"),
        ({"quantize": "int4"}, ValueError, "Unknown `quantize`"),
        ({"int8_io": True}, ValueError, "needs quantize='int8'"),
        ({"atol": 0}, ValueError, "`atol`"),
        ({"min_agreement": 1.5}, ValueError, "`min_agreement`"),
        ({"runtime_tradeoff": True, "check_tradeoffs": (0.0, 2.0)}, ValueError, "check_tradeoffs"),
    ],
)
def test_bad_arguments_fail_clearly_before_writing(kwargs, error, match, tmp_path):
    smart = _converted("smart")
    with pytest.raises(error, match=match):
        export.to_tflite(smart, tmp_path / "bad.tflite", **kwargs)
    assert _files(tmp_path) == []


def test_plain_models_have_no_tradeoff_and_missing_directories_are_reported(tmp_path):
    plain = models.conv_block_model()
    with pytest.raises(ValueError, match="plain Keras model"):
        export.to_tflite(plain, tmp_path / "p.tflite", tradeoff=0.0)
    with pytest.raises(ValueError, match="does not exist"):
        export.to_tflite(plain, tmp_path / "missing" / "p.tflite")
    with pytest.raises(TypeError, match="Keras model"):
        export.to_tflite("model.keras", tmp_path / "p.tflite")
    result = export.to_tflite(plain, tmp_path / "p.tflite")
    x = models.inputs_for(plain, batch=4, seed=9)
    assert models.max_abs_diff(_run_file(result.path, x), plain(x)) <= 1e-4


# --- bundle ----------------------------------------------------------------------------------------


class _Report:
    """Stands in for keras_smart.evaluation.TradeoffReport: anything with to_json()."""

    def to_json(self):
        return json.dumps(
            {
                "settings": {"eps": 0.3, "attacks": ["pgd"]},
                "rows": [
                    {"tradeoff": 0.0, "clean": 0.97, "pgd": 0.10, "worst_case": 0.10, "nonzero": 100, "macs": 1000},
                    {"tradeoff": 1.0, "clean": 0.90, "pgd": 0.60, "worst_case": 0.55, "nonzero": 80, "macs": 800},
                ],
                "warnings": [],
            }
        )


def test_bundle_writes_files_labels_and_metadata(tmp_path):
    smart = _converted("smart")
    out = tmp_path / "bundle"
    labels = ["zero", "one", "two", "three"]
    with pytest.warns(UserWarning, match="no model fingerprint.*cannot check"):
        metadata = export.bundle(smart, out, tradeoffs=(0.0, 1.0), labels=labels, report=_Report())
    assert _files(out) == ["labels.txt", "smart.json", "tradeoff_000.tflite", "tradeoff_100.tflite"]
    assert (out / "labels.txt").read_text().splitlines() == labels
    on_disk = json.loads((out / "smart.json").read_text())
    assert on_disk == metadata
    assert on_disk["input"]["name"] == "input" and on_disk["input"]["shape"] == [-1, 12, 12, 3]
    assert on_disk["input"]["dtype"] == "float32" and on_disk["input"]["value_range"] == [0.0, 1.0]
    assert on_disk["output"]["shape"] == [-1, 4] and on_disk["num_classes"] == 4
    assert on_disk["method"] == "smart" and not on_disk["runtime_tradeoff"]
    x = models.inputs_for(smart, batch=8, seed=3)
    for entry, lam, accuracy in zip(on_disk["files"], (0.0, 1.0), (0.97, 0.90)):
        path = out / entry["file"]
        assert entry["tradeoff"] == lam and entry["size_bytes"] == os.path.getsize(path)
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["accuracy"]["clean"] == accuracy
        assert models.max_abs_diff(_run_file(str(path), x), _keras(smart, x, lam)) <= 1e-4
    assert on_disk["report"]["settings"]["eps"] == 0.3
    assert [t["tradeoff"] for t in on_disk["tradeoffs"]] == [0.0, 1.0]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask, "the bundle directory is not left private"
    assert stat.S_IMODE((out / "tradeoff_000.tflite").stat().st_mode) == 0o666 & ~umask


def test_runtime_bundle_has_one_file_with_a_tradeoff_input(tmp_path):
    smart = _converted("oat")
    report = json.loads(_Report().to_json())  # a dict works as well as an object
    with pytest.warns(UserWarning, match="no model fingerprint"):
        metadata = export.bundle(
            smart, tmp_path / "b", tradeoffs=(0.0, 0.4, 1.0), runtime_tradeoff=True, report=report
        )
    assert _files(tmp_path / "b") == ["labels.txt", "model.tflite", "smart.json"]
    assert metadata["tradeoff_input"] == {"name": "tradeoff", "shape": [1], "dtype": "float32", "range": [0.0, 1.0]}
    assert [t["file"] for t in metadata["tradeoffs"]] == ["model.tflite"] * 3
    assert metadata["tradeoffs"][1]["accuracy"] is None and metadata["tradeoffs"][2]["accuracy"]["pgd"] == 0.60
    assert (tmp_path / "b" / "labels.txt").read_text().splitlines() == ["0", "1", "2", "3"]


def test_plain_model_bundle_takes_the_report_row_without_a_tradeoff(tmp_path):
    plain = models.conv_block_model()
    report = {"settings": {}, "rows": [{"tradeoff": None, "clean": 0.8, "worst_case": 0.2}], "warnings": []}
    with pytest.warns(UserWarning, match="no model fingerprint"):
        metadata = export.bundle(plain, tmp_path / "b", report=report)
    assert _files(tmp_path / "b") == ["labels.txt", "model.tflite", "smart.json"]
    assert metadata["files"][0]["accuracy"] == {"clean": 0.8, "worst_case": 0.2}
    assert metadata["method"] is None and metadata["tradeoffs"] == []
    with pytest.raises(ValueError, match="no trade-off"):
        export.bundle(plain, tmp_path / "c", tradeoffs=(0.0,))


def test_bundle_refuses_a_non_empty_directory_and_leaves_nothing_on_failure(tmp_path):
    smart = _converted("smart")
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        export.bundle(smart, out)
    assert _files(out) == ["keep.txt"]
    with pytest.raises(export.ExportError):
        export.bundle(smart, out, overwrite=True, atol=1e-12)
    assert _files(out) == ["keep.txt"], "a failed bundle leaves the old directory as it was"
    with pytest.raises(export.ExportError):
        export.bundle(smart, tmp_path / "fresh", atol=1e-12)
    assert _files(tmp_path) == ["bundle"], "no staging directory is left behind"
    with pytest.raises(ValueError, match="name each of the model's 4 classes"):
        export.bundle(smart, tmp_path / "fresh", labels=["a", "b"])
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        export.bundle(smart, tmp_path / "fresh", tradeoffs=(0.0, 2.0))
    export.bundle(smart, out, tradeoffs=(1.0,), overwrite=True)
    assert _files(out) == ["labels.txt", "smart.json", "tradeoff_100.tflite"]


def _evaluated(model, lambdas=(0.0, 1.0)):
    """A real (tiny) trade-off report: FGSM on 8 examples."""
    x = models.inputs_for(model, batch=8, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", keras_smart.evaluation.GradientMaskingWarning)  # an untrained model
        return keras_smart.evaluate_tradeoff(
            model, (x, np.arange(8) % 4), lambdas=lambdas, attacks=("fgsm",), eps=0.1, progress=False
        )


def test_bundle_refuses_a_report_measured_before_pruning_and_writes_nothing(tmp_path):
    smart = _converted("smart")
    report = _evaluated(smart)
    pruning.prune(smart, 0.5)
    stale = "measured on different weights, masks or pruning state than the model being exported"
    fix = r"Re-run keras_smart.evaluate_tradeoff\(model, \.\.\.\) after pruning, or pass report=None\."
    for given in (report, json.loads(report.to_json()), report.to_json()):
        with pytest.raises(ValueError, match=f"{stale}.*{fix}"):
            export.bundle(smart, tmp_path / "bundle", report=given)
    assert _files(tmp_path) == [], "nothing is written, no staging directory is left"
    out = tmp_path / "old"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=report.fingerprint):
        export.bundle(smart, out, report=report, overwrite=True)
    assert _files(out) == ["keep.txt"]
    fresh = _evaluated(smart)  # the fix the message names
    assert fresh.fingerprint != report.fingerprint
    assert fresh.rows[1]["nonzero"] < report.rows[1]["nonzero"]  # the stale counts were the unpruned ones
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a checked report raises no warning
        metadata = export.bundle(smart, tmp_path / "bundle", report=fresh)
    assert metadata["report"]["settings"]["model_fingerprint"] == fresh.fingerprint
    assert metadata["tradeoffs"][1]["accuracy"]["nonzero"] == fresh.rows[1]["nonzero"]
    assert export.bundle(smart, tmp_path / "plain", report=None)["tradeoffs"][0]["accuracy"] is None


def test_report_json_of_a_saved_model_bundles_its_reloaded_copy_at_any_tradeoff(tmp_path):
    """The CLI's path: evaluate model.keras, write report.json; export loads model.keras again."""
    smart = _converted("smart-blend")
    smart.save(str(tmp_path / "model.keras"))
    evaluated = keras.models.load_model(str(tmp_path / "model.keras"))
    keras_smart.set_tradeoff(evaluated, 0.3)
    (tmp_path / "report.json").write_text(_evaluated(evaluated, lambdas=(0.0, 0.5, 1.0)).to_json())
    exported = keras.models.load_model(str(tmp_path / "model.keras"))
    keras_smart.set_tradeoff(exported, 0.9)
    report = json.loads((tmp_path / "report.json").read_text())
    metadata = export.bundle(exported, tmp_path / "bundle", tradeoffs=(0.0, 1.0), report=report)
    assert metadata["report"]["settings"]["model_fingerprint"] == keras_smart.evaluation.model_fingerprint(smart)
    clean = [t["accuracy"]["clean"] for t in metadata["tradeoffs"]]
    assert clean == [report["rows"][0]["clean"], report["rows"][2]["clean"]]
