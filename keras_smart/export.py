"""to_tflite() and bundle(): LiteRT files that run on Android's default runtime, checked before they are kept.

A file is written next to its destination under a temporary name, loaded in
LiteRT's interpreter (`ai_edge_litert`, default XNNPACK delegate) and compared
with the Keras model on sample inputs; only a file that passes is renamed into
place. Anything else (a conversion that would need Flex / select-TF ops, an
interpreter that cannot prepare the file, a parity check that fails) raises
and leaves no file behind.

Trade-off, two ways:
- baked (`tradeoff=lam`): `keras_smart.strip(model, lam)` folds masks, noise
  (at its expectation), FiLM and the chosen batch-norm set into plain layers;
  the smallest and fastest file, one per trade-off.
- runtime (`runtime_tradeoff=True`): lam is a second input ("tradeoff", float32
  of shape [1]); the file keeps each path's constant kernels (SMART: two per
  layer, see `keras_smart.layers.base.separate_paths`) and routes batch-norm
  and FiLM by lam, so one file serves every trade-off.
"""

import dataclasses
import hashlib
import json
import math
import numbers
import os
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart import evaluation
from keras_smart import training
from keras_smart import version
from keras_smart.convert import get_tradeoff  # the package's `convert` attribute is the function
from keras_smart.convert import strip
from keras_smart.layers import base

keras = _compat.keras

QUANTIZE_CHOICES = (None, "dynamic", "float16", "int8")
INPUT_NAME = "input"
TRADEOFF_NAME = "tradeoff"
OUTPUT_NAME = "output"
BUNDLE_METADATA = "smart.json"
BUNDLE_LABELS = "labels.txt"
# TF-MOT wrappers, by name (so TF-MOT is not imported): pruning ones must be stripped before export;
# quantization-aware-training ones export as int8 with the ranges they learned.
_TFMOT_PRUNE_WRAPPERS = ("PruneLowMagnitude",)
_TFMOT_QUANTIZE_WRAPPERS = ("QuantizeWrapper", "QuantizeWrapperV2")


class ExportError(RuntimeError):
    """A LiteRT file could not be produced or failed its check; no file was left behind."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `to_tflite` wrote and how it was checked.

    Attributes:
      path: the file written.
      size_bytes: its size.
      quantize: None, "dynamic", "float16" or "int8".
      tradeoff: the baked trade-off, or None for a runtime-trade-off file or a plain model.
      runtime_tradeoff: whether lam is the file's second input ("tradeoff").
      max_abs_diff: the largest |LiteRT - Keras| over the check inputs (and check trade-offs).
      agreement: the share of check inputs whose top-1 class matches Keras.
      check_samples: how many inputs were compared (per trade-off).
      check_tradeoffs: the trade-offs a runtime-trade-off file was checked at.
      ops: the builtin operators the file uses, sorted.
      inputs, outputs: ({"name", "shape", "dtype", "quantization"}, ...) of the file's signature;
        shape -1 marks the batch dimension.
    """

    path: str
    size_bytes: int
    quantize: object
    tradeoff: object
    runtime_tradeoff: bool
    max_abs_diff: float
    agreement: float
    check_samples: int
    check_tradeoffs: tuple
    ops: tuple
    inputs: tuple
    outputs: tuple

    def as_dict(self):
        return dataclasses.asdict(self)


# --- to_tflite -------------------------------------------------------------------------------------


def to_tflite(
    model,
    path,
    *,
    tradeoff=None,
    runtime_tradeoff=False,
    quantize=None,
    representative_data=None,
    check_data=None,
    check_tradeoffs=(0.0, 0.5, 1.0),
    atol=1e-4,
    min_agreement=0.98,
    int8_io=False,
    max_samples=500,
):
    """Writes a LiteRT (`.tflite`) file of `model` and checks it against Keras before keeping it.

    The file is converted with builtin operators only (no Flex / select-TF ops),
    written under a temporary name in the destination directory, loaded in
    `ai_edge_litert`'s interpreter with its default XNNPACK delegate and run on
    the check inputs. It is renamed to `path` only if it loads, prepares and
    matches Keras: float files within `atol` (max abs difference of the
    outputs), quantized files with top-1 agreement >= `min_agreement`.
    Otherwise it is deleted and an `ExportError` says why; an existing file at
    `path` is then left as it was.

    Args:
      model: a `SmartModel` or a plain single-input, single-output Keras model
        (also one made quantization-aware by `keras_smart.pruning.quantize_aware`,
        which exports with quantize="int8" and needs no representative data).
      path: the destination file (its directory must exist).
      tradeoff: for a SmartModel, the lam in [0, 1] to bake (None: the model's
        current trade-off). Must be None for a plain model.
      runtime_tradeoff: make lam a second input named "tradeoff" (float32, shape
        [1]; values are clipped to [0, 1]) instead of baking it: one file serves
        every trade-off. SmartModel only; not together with `tradeoff`.
      quantize: None (float32), "dynamic" (int8 weights), "float16" (float16
        weights) or "int8" (full-integer operators; needs `representative_data`).
      representative_data: inputs for int8 calibration: an array (N, ...) or a
        tf.data.Dataset of input batches (or of (x, y) batches). Also the
        default check inputs.
      check_data: inputs to compare on (array or dataset as above); default:
        `representative_data`, else 32 uniform random inputs in [0, 1).
      check_tradeoffs: the trade-offs a runtime-trade-off file is checked at
        (and, for int8, calibrated at).
      atol: the largest max abs difference a float file may show (default 1e-4).
      min_agreement: the smallest top-1 agreement a quantized file may show
        (default 0.98).
      int8_io: with quantize="int8", make the inputs and outputs int8 too
        (their scale and zero point are in `ExportResult.inputs` / `.outputs`);
        default float32 inputs and outputs.
      max_samples: at most this many inputs are used for calibration and checks.

    Returns:
      An `ExportResult` (path, size, check numbers, operators, signature).

    Raises:
      TypeError: `model` is not a Keras model; bad argument types.
      ValueError: lam outside [0, 1], `tradeoff` with `runtime_tradeoff`, a
        trade-off for a plain model, an unknown `quantize`, int8 without
        `representative_data`, a model with several inputs or outputs, a model
        still wrapped for TF-MOT pruning, a quantization-aware model without
        quantize="int8", a missing destination directory.
      ExportError: the conversion needs non-builtin operators or fails, LiteRT
        cannot load or prepare the file, or the check fails. No file is left.

    Example:
      >>> result = keras_smart.export.to_tflite(smart, "robust.tflite", tradeoff=1.0)
      >>> result = keras_smart.export.to_tflite(smart, "smart.tflite", runtime_tradeoff=True)
      >>> result = keras_smart.export.to_tflite(smart, "robust_int8.tflite", tradeoff=1.0,
      ...                                       quantize="int8", representative_data=x_train[:200])
    """
    options = _check_options(
        model,
        tradeoff=tradeoff,
        runtime_tradeoff=runtime_tradeoff,
        quantize=quantize,
        representative_data=representative_data,
        check_tradeoffs=check_tradeoffs,
        atol=atol,
        min_agreement=min_agreement,
        int8_io=int8_io,
        max_samples=max_samples,
    )
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"The directory of `path` does not exist: {directory!r}. Create it first.")
    if os.path.isdir(path):
        raise ValueError(f"`path` must be a file name, not a directory. Received: path={path!r}")

    input_shape = tuple(model.inputs[0].shape[1:])
    representative = None
    if representative_data is not None:
        representative = _samples(representative_data, input_shape, max_samples, "representative_data")
    if check_data is not None:
        check = _samples(check_data, input_shape, max_samples, "check_data")
    elif representative is not None:
        check = representative
    else:
        check = np.random.default_rng(0).random((32,) + input_shape).astype("float32")

    data = _convert(model, options, representative)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        result = _verify(model, temporary, path, options, check)
        _set_default_mode(temporary, 0o666)  # mkstemp creates 0600; an exported file is shared like any other
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return result


def _check_options(
    model,
    *,
    tradeoff,
    runtime_tradeoff,
    quantize,
    representative_data,
    check_tradeoffs,
    atol,
    min_agreement,
    int8_io,
    max_samples,
):
    """Validates everything before any work; returns the normalised options."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a Keras model. Received: {type(model).__name__}")
    layer_classes = {type(l).__name__ for l in _compat.flatten_layers(model)}
    wrapped = sorted(layer_classes & set(_TFMOT_PRUNE_WRAPPERS))
    if wrapped:
        raise ValueError(
            f"Model '{model.name}' still holds TF-MOT pruning wrappers {wrapped}. Call "
            "keras_smart.pruning.strip_pruning(model) before exporting."
        )
    quantization_aware = bool(layer_classes & set(_TFMOT_QUANTIZE_WRAPPERS))
    if quantization_aware and quantize != "int8":
        raise ValueError(
            f"Model '{model.name}' is quantization-aware trained (TF-MOT QuantizeWrapper layers): it exports "
            f"as int8 with the ranges it learned. Pass quantize='int8'. Received: quantize={quantize!r}"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"`to_tflite` exports a model with one input and one output; '{model.name}' has "
            f"{len(model.inputs)} and {len(model.outputs)}. Wrap the classifier in a single-input, "
            "single-output model."
        )
    smart = isinstance(model, training.SmartModel)
    if not isinstance(runtime_tradeoff, bool):
        raise TypeError(f"`runtime_tradeoff` must be True or False. Received: {runtime_tradeoff!r}")
    if runtime_tradeoff and tradeoff is not None:
        raise ValueError(
            "Pass either `tradeoff` (bake one trade-off into the file) or `runtime_tradeoff=True` (lam "
            f"becomes an input), not both. Received: tradeoff={tradeoff!r}, runtime_tradeoff=True"
        )
    if not smart and (tradeoff is not None or runtime_tradeoff):
        raise ValueError(
            f"Model '{model.name}' is a plain Keras model ({type(model).__name__}); it has no trade-off. "
            "Leave `tradeoff` and `runtime_tradeoff` unset, or export the SmartModel itself."
        )
    grouped_3d = [
        l.name for l in _compat.flatten_layers(model)
        if isinstance(l, keras.layers.Conv3D) and getattr(l, "groups", 1) != 1
    ]
    if grouped_3d and not runtime_tradeoff:  # a baked file runs Keras's own Conv3D
        raise ValueError(
            f"Layers {grouped_3d} are grouped Conv3D layers, and LiteRT's CONV_3D has no groups, so a "
            "file with them baked in cannot run. Ways forward: "
            + ("export with runtime_tradeoff=True (keras_smart's conditional Conv3D computes one "
               "convolution per group, which LiteRT runs), or " if smart else "")
            + "rebuild those layers with groups=1."
        )
    if tradeoff is not None:
        tradeoff = config_lib.check_tradeoff(tradeoff, "tradeoff")
    elif smart and not runtime_tradeoff:
        tradeoff = get_tradeoff(model)
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(
            f"Unknown `quantize`: expected one of {list(QUANTIZE_CHOICES)}. Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None and not quantization_aware:
        raise ValueError(
            "quantize='int8' needs `representative_data` (a few hundred typical inputs, e.g. "
            "x_train[:200]) to calibrate activation ranges. Received: representative_data=None"
        )
    if not isinstance(int8_io, bool):
        raise TypeError(f"`int8_io` must be True or False. Received: {int8_io!r}")
    if int8_io and quantize != "int8":
        raise ValueError(f"`int8_io=True` needs quantize='int8'. Received: quantize={quantize!r}")
    check_tradeoffs = tuple(config_lib.check_tradeoff(t, "check_tradeoffs[i]") for t in check_tradeoffs)
    if runtime_tradeoff and not check_tradeoffs:
        raise ValueError("`check_tradeoffs` must list at least one trade-off for a runtime-trade-off file.")
    if isinstance(atol, bool) or not isinstance(atol, numbers.Real) or not atol > 0:
        raise ValueError(f"`atol` must be a number > 0. Received: atol={atol!r}")
    if (
        isinstance(min_agreement, bool)
        or not isinstance(min_agreement, numbers.Real)
        or not 0 <= min_agreement <= 1
    ):
        raise ValueError(
            f"`min_agreement` must be a number in [0, 1]. Received: min_agreement={min_agreement!r}"
        )
    if isinstance(max_samples, bool) or not isinstance(max_samples, numbers.Integral) or max_samples < 1:
        raise ValueError(f"`max_samples` must be an int >= 1. Received: max_samples={max_samples!r}")
    return {
        "quantization_aware": quantization_aware,
        "smart": smart,
        "tradeoff": tradeoff,
        "runtime_tradeoff": runtime_tradeoff,
        "quantize": quantize,
        "check_tradeoffs": check_tradeoffs if runtime_tradeoff else (),
        "atol": float(atol),
        "min_agreement": float(min_agreement),
        "int8_io": int8_io,
    }


def _samples(data, input_shape, limit, arg_name):
    """Up to `limit` inputs as a float32 array, from an array or a tf.data.Dataset of batches."""
    if isinstance(data, tf.data.Dataset):
        parts, count = [], 0
        for element in data:
            x = element[0] if isinstance(element, (tuple, list)) else element
            x = np.asarray(x)
            parts.append(x)
            count += len(x)
            if count >= limit:
                break
        if not parts:
            raise ValueError(f"`{arg_name}` is an empty dataset.")
        array = np.concatenate(parts)
    else:
        try:
            array = np.asarray(data, dtype="float32")
        except (TypeError, ValueError):
            raise TypeError(
                f"`{arg_name}` must be an array of inputs (N, ...) or a tf.data.Dataset of input batches. "
                f"Received: {type(data).__name__}"
            ) from None
    if array.ndim != len(input_shape) + 1 or any(
        expected is not None and got != expected for got, expected in zip(array.shape[1:], input_shape)
    ):
        raise ValueError(
            f"`{arg_name}` must hold inputs of shape (N,) + {input_shape}. Received: shape {array.shape}"
        )
    if len(array) == 0:
        raise ValueError(f"`{arg_name}` is empty.")
    return np.ascontiguousarray(array[:limit], dtype="float32")


# --- conversion ------------------------------------------------------------------------------------


def _serving_function(model, options):
    """(tf.function with a named signature, the Keras model whose variables it reads)."""
    spec = tf.TensorSpec((None,) + tuple(model.inputs[0].shape[1:]), tf.float32, name=INPUT_NAME)
    if options["runtime_tradeoff"]:
        lam_spec = tf.TensorSpec((1,), tf.float32, name=TRADEOFF_NAME)

        def serve_runtime(input, tradeoff):  # pylint: disable=redefined-builtin
            lam = tf.clip_by_value(tf.reshape(tradeoff, [1]), 0.0, 1.0)
            with base.separate_paths(), base.expected_noise(), base.tradeoff_override(lam):
                outputs = model(input, training=False)
            return {OUTPUT_NAME: tf.cast(outputs, tf.float32)}

        return tf.function(serve_runtime, input_signature=[spec, lam_spec]), model
    exported = strip(model, tradeoff=options["tradeoff"]) if options["smart"] else model

    def serve(input):  # pylint: disable=redefined-builtin
        return {OUTPUT_NAME: tf.cast(exported(input, training=False), tf.float32)}

    return tf.function(serve, input_signature=[spec]), exported


def _representative_dataset(samples, options):
    lambdas = options["check_tradeoffs"] or (None,)

    def generate():
        for i, x in enumerate(samples):
            example = {INPUT_NAME: x[None]}
            if options["runtime_tradeoff"]:
                example[TRADEOFF_NAME] = np.array([lambdas[i % len(lambdas)]], np.float32)
            yield example

    return generate


def _convert(model, options, representative):
    """The `.tflite` bytes, converted with builtin operators only."""
    function, holder = _serving_function(model, options)
    module = tf.Module()
    # Keras 3 wraps its tf.Variables: track them explicitly, so the SavedModel freezes them.
    module.weights_ = [_compat.tf_variable(v) for v in holder.weights]
    module.serve = function
    with tempfile.TemporaryDirectory(prefix="keras_smart_export_") as saved:
        try:
            signatures = {"serving_default": function.get_concrete_function()}
            tf.saved_model.save(module, saved, signatures=signatures)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            quantize = options["quantize"]
            if quantize is not None:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantize == "float16":
                converter.target_spec.supported_types = [tf.float16]
            elif quantize == "int8":
                if representative is not None:  # full integer; a quantization-aware model has its ranges
                    converter.representative_dataset = _representative_dataset(representative, options)
                    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                if options["int8_io"]:
                    converter.inference_input_type = tf.int8
                    converter.inference_output_type = tf.int8
            with warnings.catch_warnings():  # int8 calibration runs TF's own (deprecated) interpreter
                warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
                return converter.convert()
        except Exception as e:  # pylint: disable=broad-except
            message = str(e)
            flex = any(word in message.lower() for word in ("flex", "select", "not supported"))
            hint = (
                " The graph needs operators outside LiteRT's builtin set (Flex / select-TF ops), which "
                "Android's default runtime cannot run: replace the layers that use them."
                if flex
                else ""
            )
            raise ExportError(
                f"Conversion of '{model.name}' to LiteRT failed.{hint} Converter said: {message}"
            ) from e


# --- checking --------------------------------------------------------------------------------------


def _interpreter(path, num_threads=None, delegates=True):
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top

    resolver = (
        litert.OpResolverType.AUTO if delegates else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return litert.Interpreter(
        model_path=path, num_threads=num_threads, experimental_op_resolver_type=resolver
    )


def _operators(path):
    """The operators the file uses, read without delegates; raises for non-builtin ones."""
    interpreter = _interpreter(path, delegates=False)
    details = interpreter._get_ops_details()  # pylint: disable=protected-access
    names = sorted({op["op_name"] for op in details})
    custom = [n for n in names if n.startswith("Flex") or n in ("CUSTOM", "DELEGATE") or not n.isupper()]
    if custom:
        raise ExportError(
            f"The file would need non-builtin operators {custom}; Android's default LiteRT runtime "
            "runs builtin operators only."
        )
    return tuple(names)


def _tensor_details(details):
    rows = []
    for name, d in sorted(details.items()):
        scale, zero_point = d["quantization"]
        rows.append(
            {
                "name": name,
                "shape": [int(s) for s in d.get("shape_signature", d["shape"])],
                "dtype": np.dtype(d["dtype"]).name,
                "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if scale else None,
            }
        )
    return tuple(rows)


def _quantized_in(value, detail):
    scale, zero_point = detail["quantization"]
    if not scale:
        return value.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(value / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def _dequantized_out(value, detail):
    scale, zero_point = detail["quantization"]
    return value.astype("float32") if not scale else (value.astype("float32") - zero_point) * scale


def _keras_outputs(model, x, lam, smart):
    if not smart:
        return np.asarray(model(x, training=False), dtype="float32")
    with base.expected_noise(), base.tradeoff_override(float(lam)):
        return np.asarray(model(x, training=False), dtype="float32")


def _verify(model, temporary, path, options, check):
    """Loads the file with the default delegate, runs it on `check` and compares with Keras."""
    try:
        ops = _operators(temporary)
        interpreter = _interpreter(temporary)
        interpreter.allocate_tensors()  # applies the default delegate: fails here if it cannot prepare
        runner = interpreter.get_signature_runner("serving_default")
        in_details, out_details = runner.get_input_details(), runner.get_output_details()
    except ExportError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise ExportError(
            f"LiteRT could not load or prepare the file with its default (XNNPACK) delegate: {e}. "
            "Android's default runtime would fail the same way."
        ) from e
    lambdas = options["check_tradeoffs"] if options["runtime_tradeoff"] else (options["tradeoff"],)
    max_diff, agree, total = 0.0, 0, 0
    for lam in lambdas:
        feeds = {INPUT_NAME: _quantized_in(check, in_details[INPUT_NAME])}
        if options["runtime_tradeoff"]:
            feeds[TRADEOFF_NAME] = _quantized_in(np.array([lam], np.float32), in_details[TRADEOFF_NAME])
        try:
            got = runner(**feeds)[OUTPUT_NAME]
        except Exception as e:  # pylint: disable=broad-except
            raise ExportError(f"LiteRT could not run the file: {e}") from e
        got = _dequantized_out(got, out_details[OUTPUT_NAME])
        expected = _keras_outputs(model, check, lam, options["smart"])
        if got.shape != expected.shape:
            raise ExportError(f"LiteRT output shape {got.shape} differs from Keras' {expected.shape}.")
        max_diff = max(max_diff, float(np.max(np.abs(got - expected))) if got.size else 0.0)
        agree += int(np.sum(np.argmax(got, -1) == np.argmax(expected, -1)))
        total += int(np.prod(got.shape[:-1]))
    agreement = agree / max(total, 1)
    where = f" at trade-offs {list(lambdas)}" if options["runtime_tradeoff"] else ""
    if options["quantize"] is None:
        if not max_diff <= options["atol"]:
            raise ExportError(
                f"The LiteRT file differs from the Keras model by up to {max_diff:.3g}{where} (allowed: "
                f"atol={options['atol']:g}). No file was written to {path!r}."
            )
    elif not agreement >= options["min_agreement"]:
        raise ExportError(
            f"The {options['quantize']} LiteRT file agrees with the Keras model's top-1 class on only "
            f"{agreement:.1%} of {len(check)} check inputs{where} "
            f"(required: {options['min_agreement']:.1%}). "
            f"Give more representative calibration data, or a lower `min_agreement`. No file was written "
            f"to {path!r}."
        )
    return ExportResult(
        path=path,
        size_bytes=os.path.getsize(temporary),
        quantize=options["quantize"],
        tradeoff=options["tradeoff"],
        runtime_tradeoff=options["runtime_tradeoff"],
        max_abs_diff=max_diff,
        agreement=agreement,
        check_samples=len(check),
        check_tradeoffs=tuple(options["check_tradeoffs"]),
        ops=ops,
        inputs=_tensor_details(in_details),
        outputs=_tensor_details(out_details),
    )


# --- bundle ----------------------------------------------------------------------------------------


def bundle(
    model,
    out_dir,
    *,
    tradeoffs=None,
    labels=None,
    report=None,
    quantize=None,
    representative_data=None,
    runtime_tradeoff=False,
    input_range=(0.0, 1.0),
    overwrite=False,
    **to_tflite_options,
):
    """Writes what an Android app needs: `.tflite` file(s), `labels.txt` and `smart.json`.

    Files (all checked by `to_tflite` before the directory appears):
    - one baked file per trade-off, `tradeoff_<round(100 lam):03d>.tflite`
      (e.g. `tradeoff_000.tflite`, `tradeoff_100.tflite`), or with
      `runtime_tradeoff=True` one file `model.tflite` whose second input
      "tradeoff" selects lam; a plain Keras model gives one `model.tflite`;
    - `labels.txt`: one class name per line, in output order;
    - `smart.json`: input name, shape (batch -1), dtype and value range, output
      name and shape, each file with its trade-off, size, SHA-256 and check
      numbers, and, with `report`, each trade-off's measured clean / robust
      accuracy.

    The bundle is assembled in a temporary directory beside `out_dir` and moved
    into place only when complete: a failure leaves nothing half-written.

    Args:
      model: a `SmartModel` (or a plain Keras model).
      out_dir: the bundle directory; it must not exist or be empty, unless
        `overwrite=True` (then it is replaced as a whole).
      tradeoffs: the trade-offs to offer (default (0.0, 1.0) for a SmartModel).
      labels: class names (one per output unit); default "0", "1", ....
      report: a `keras_smart.evaluation.TradeoffReport` (anything with
        `to_json()`) or a dict shaped like its JSON: {"settings": ..., "rows":
        [{"tradeoff": lam, "clean": acc, "<attack>": acc, "worst_case": acc, ...}],
        "warnings": [...]}. Its `settings["model_fingerprint"]` (what
        `evaluate_tradeoff` records: `keras_smart.evaluation.model_fingerprint`
        of the weights, masks and batch-norm statistics it measured, not the
        trade-off) must equal the fingerprint of `model`: a report measured
        before pruning, fine-tuning or new masks is refused (ValueError), so
        smart.json never carries stale accuracies or non-zero counts. A report
        without a fingerprint (made by other code, or an older keras_smart)
        cannot be checked: `bundle` warns (UserWarning) and uses it as given.
      quantize, representative_data: as in `to_tflite` (every file).
      runtime_tradeoff: one file with lam as an input instead of one per trade-off.
      input_range: the (min, max) of the model's input values, recorded for the app.
      overwrite: replace an existing non-empty `out_dir`.
      **to_tflite_options: other `to_tflite` arguments (check_data, atol, min_agreement, ...).

    Returns:
      The metadata written to `smart.json`, as a dict.

    Raises:
      FileExistsError: `out_dir` is not empty and `overwrite` is False.
      ValueError / TypeError: bad arguments, or a `report` measured on other
        weights than `model`'s (checked before anything is written).
      ExportError: a file failed its check (nothing is written).

    Example:
      >>> keras_smart.export.bundle(smart, "app/src/main/assets/smart", tradeoffs=(0.0, 0.4, 1.0),
      ...                           labels=[str(d) for d in range(10)], report=report,
      ...                           quantize="int8", representative_data=x_train[:200])
    """
    smart = isinstance(model, training.SmartModel)
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a Keras model. Received: {type(model).__name__}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"`out_dir` exists and is not a directory: {out_dir!r}")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(
            f"`out_dir` {out_dir!r} is not empty. Choose a new directory, or pass overwrite=True to "
            "replace it."
        )
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise ValueError(f"The parent directory of `out_dir` does not exist: {parent!r}")
    if tradeoffs is None:
        tradeoffs = (0.0, 1.0) if smart else ()
    tradeoffs = tuple(config_lib.check_tradeoff(t, "tradeoffs[i]") for t in tradeoffs)
    if not smart and tradeoffs:
        raise ValueError(
            f"Model '{model.name}' is a plain Keras model: it has no trade-off. Leave `tradeoffs` unset."
        )
    if smart and not tradeoffs:
        raise ValueError("`tradeoffs` must list at least one trade-off in [0, 1].")
    if len(set(tradeoffs)) != len(tradeoffs):
        raise ValueError(f"`tradeoffs` has repeated values: {list(tradeoffs)}")
    files = [_bundle_file(t) for t in tradeoffs]
    if len(set(files)) != len(files):
        raise ValueError(
            f"`tradeoffs` {list(tradeoffs)} are too close: their file names (lam to 0.01) collide."
        )
    classes = int(model.outputs[0].shape[-1]) if len(model.outputs) == 1 else None
    labels = _check_labels(labels, classes)
    rows = _report_rows(report)
    if rows is not None:
        _check_report_measured(model, rows)
    low, high = _check_range(input_range)
    if "tradeoff" in to_tflite_options or "path" in to_tflite_options:
        raise ValueError("`bundle` chooses each file's `tradeoff` and path itself; use `tradeoffs`.")

    staging = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(os.path.abspath(out_dir)) + ".")
    try:
        exported = []
        common = dict(quantize=quantize, representative_data=representative_data, **to_tflite_options)
        if runtime_tradeoff or not smart:
            if runtime_tradeoff:
                common.setdefault("check_tradeoffs", tradeoffs)
            result = to_tflite(
                model, os.path.join(staging, "model.tflite"), runtime_tradeoff=runtime_tradeoff, **common
            )
            exported.append(("model.tflite", None, result))
        else:
            for lam, name in zip(tradeoffs, files):
                result = to_tflite(model, os.path.join(staging, name), tradeoff=lam, **common)
                exported.append((name, lam, result))
        with open(os.path.join(staging, BUNDLE_LABELS), "w", encoding="utf-8") as f:
            f.write("".join(label + "\n" for label in labels))
        metadata = _metadata(model, smart, exported, tradeoffs, rows, (low, high), labels, runtime_tradeoff)
        with open(os.path.join(staging, BUNDLE_METADATA), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2, sort_keys=False)
            f.write("\n")
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return metadata


def _bundle_file(lam):
    return f"tradeoff_{round(100 * lam):03d}.tflite"


def _check_labels(labels, classes):
    if labels is None:
        if classes is None:
            raise ValueError("Pass `labels`: the model's number of classes is not known.")
        return [str(i) for i in range(classes)]
    if isinstance(labels, str) or not all(isinstance(l, str) for l in labels):
        raise TypeError(f"`labels` must be a list of strings. Received: {labels!r:.80}")
    labels = list(labels)
    if classes is not None and len(labels) != classes:
        raise ValueError(
            f"`labels` must name each of the model's {classes} classes. Received {len(labels)} labels."
        )
    bad = [l for l in labels if "\n" in l or "\r" in l or not l]
    if bad:
        raise ValueError(f"Labels must be non-empty and on one line. Received: {bad[:3]}")
    return labels


def _check_range(input_range):
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise TypeError(
            f"`input_range` must be a (min, max) pair of numbers. Received: {input_range!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"`input_range` must be finite with min < max. Received: {input_range!r}")
    return low, high


def _report_rows(report):
    """The report as a JSON-able dict with "rows" (or None)."""
    if report is None:
        return None
    if hasattr(report, "to_json"):
        report = report.to_json()
    if isinstance(report, str):
        report = json.loads(report)
    if not isinstance(report, dict) or not isinstance(report.get("rows"), list):
        raise TypeError(
            "`report` must be a TradeoffReport (with to_json()) or a dict with a 'rows' list of "
            f"{{'tradeoff': lam, 'clean': acc, ...}}. Received: {type(report).__name__}"
        )
    for row in report["rows"]:
        if not isinstance(row, dict) or "tradeoff" not in row:
            raise ValueError(f"Every report row needs a 'tradeoff'. Received row: {row!r:.120}")
    return json.loads(json.dumps(report))  # a plain, JSON-safe copy


def _check_report_measured(model, report):
    """Refuses a report measured on other weights than `model`'s; warns when it cannot tell."""
    settings = report.get("settings")
    measured = settings.get("model_fingerprint") if isinstance(settings, dict) else None
    if measured is None:
        warnings.warn(
            "`report` has no model fingerprint (settings['model_fingerprint']: it was not made by "
            "keras_smart.evaluate_tradeoff, or by an older version), so bundle cannot check that it was measured "
            "on this model's weights, masks and pruning state; its accuracies and non-zero counts go into "
            f"{BUNDLE_METADATA} as given.",
            UserWarning,
            stacklevel=3,
        )
        return
    current = evaluation.model_fingerprint(model)
    if measured != current:
        raise ValueError(
            f"`report` was measured on different weights, masks or pruning state than the model being exported "
            f"(model fingerprint {measured!s} in the report, {current} now): the model changed after "
            "keras_smart.evaluate_tradeoff (pruned, fine-tuned, new masks or batch-norm statistics), so the "
            f"report's accuracies and non-zero counts would be stale in {BUNDLE_METADATA}. Re-run "
            "keras_smart.evaluate_tradeoff(model, ...) after pruning, or pass report=None."
        )


def _accuracy_for(rows, lam):
    """The report row measured at `lam` (None: a plain model's row), without its "tradeoff" key."""
    if rows is None:
        return None
    for row in rows["rows"]:
        measured = row["tradeoff"]
        if lam is None:
            same = measured is None
        else:
            same = measured is not None and abs(float(measured) - lam) < 1e-6
        if same:
            return {k: v for k, v in row.items() if k != "tradeoff"}
    return None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _metadata(model, smart, exported, tradeoffs, rows, value_range, labels, runtime_tradeoff):
    first = exported[0][2]
    model_input = dict(first.inputs[[i["name"] for i in first.inputs].index(INPUT_NAME)])
    model_input["value_range"] = list(value_range)
    model_input["layout"] = "NHWC" if len(model_input["shape"]) == 4 else None
    output = dict(first.outputs[0])
    output["kind"] = "logits"
    entries = []
    for name, lam, result in exported:
        entry = {
            "file": name,
            "tradeoff": lam,
            "size_bytes": result.size_bytes,
            "sha256": _sha256(result.path),
            "quantize": result.quantize,
            "operators": list(result.ops),
            "check": {
                "max_abs_diff": result.max_abs_diff,
                "top1_agreement": result.agreement,
                "samples": result.check_samples,
            },
        }
        if rows is not None and (lam is not None or not smart):
            entry["accuracy"] = _accuracy_for(rows, lam)
        entries.append(entry)
    metadata = {
        "format": "keras_smart.bundle",
        "format_version": 1,
        "keras_smart_version": version.__version__,
        "keras_flavour": _compat.FLAVOUR,
        "model_name": model.name,
        "method": _method_of(model) if smart else None,
        "signature": "serving_default",
        "input": model_input,
        "output": output,
        "labels_file": BUNDLE_LABELS,
        "num_classes": len(labels),
        "runtime_tradeoff": bool(runtime_tradeoff),
        "tradeoffs": [
            {
                "tradeoff": lam,
                "file": "model.tflite" if runtime_tradeoff else _bundle_file(lam),
                "accuracy": _accuracy_for(rows, lam),
            }
            for lam in tradeoffs
        ],
        "files": entries,
    }
    if runtime_tradeoff:
        metadata["tradeoff_input"] = {
            "name": TRADEOFF_NAME,
            "shape": [1],
            "dtype": "float32",
            "range": [0.0, 1.0],
        }
    if rows is not None:
        metadata["report"] = rows
    return metadata


def _method_of(model):
    """The conversion method, read from the conditional layer classes (best effort)."""
    from keras_smart import registry  # pylint: disable=g-import-not-at-top

    classes = {type(l) for l in model.conditional_layers()}
    methods = config_lib.Method
    for method in (methods.FLOATS, methods.SMART, methods.FLOAT, methods.OAT):
        swapped = set(registry.SWAPS[method].values())
        if classes and classes <= swapped:
            masked = any(getattr(l, "masked", False) for l in model.conditional_layers())
            if method == config_lib.Method.FLOATS and not masked:
                continue
            if method == config_lib.Method.FLOAT and masked:
                continue
            return method.value
    return None


def _set_default_mode(path, mode):
    """Gives `path` the permissions a plain open()/mkdir() would: `mode` less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _move_into_place(staging, out_dir):
    """Renames the finished `staging` directory to `out_dir` (replacing an old one last)."""
    _set_default_mode(staging, 0o777)  # mkdtemp creates 0700
    if not os.path.exists(out_dir):
        os.rename(staging, out_dir)
        return
    old = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out_dir)), prefix=".old.")
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["ExportError", "ExportResult", "bundle", "to_tflite"]
