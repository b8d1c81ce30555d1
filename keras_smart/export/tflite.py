"""to_tflite(): one LiteRT file, converted, checked against Keras, and only then written under its name."""

import dataclasses
import os

import numpy as np

from keras_smart import inputs
from keras_smart.export import conversion
from keras_smart.export import files
from keras_smart.export import macs
from keras_smart.export import options as options_lib
from keras_smart.export import verify


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
    compact="auto",
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
      tradeoff: for a SmartModel, the trade-off in [0, 1] to bake (None: the
        model's current trade-off). Must be None for a plain model.
      runtime_tradeoff: make the trade-off a second input named "tradeoff"
        (float32, shape [1]; values are clipped to [0, 1]) instead of baking it:
        one file serves every trade-off. SmartModel only; not together with
        `tradeoff`.
      quantize: None (float32), "dynamic" (int8 weights), "float16" (float16
        weights) or "int8" (full-integer operators; needs `representative_data`).
      representative_data: inputs for int8 calibration: an array (N, ...) or a
        tf.data.Dataset of input batches (or of (x, y) batches). Also the
        default check inputs.
      check_data: inputs to compare on (array or dataset as above); default:
        `representative_data`, else 32 uniform random inputs in [0, 1).
      check_tradeoffs: the trade-offs a runtime-trade-off file is checked at
        (and, for int8, calibrated at).
      atol: the largest max abs difference a float file may show (default 1e-4), in units of
        the largest Keras output magnitude when that exceeds 1 (round-off grows with the logits).
      min_agreement: the smallest top-1 agreement a quantized file may show
        (default 0.98; for an 8-bit file a class whose Keras logit is within
        one 8-bit step of the top one counts as agreeing).
      int8_io: with quantize="int8", make the inputs and outputs int8 too
        (their scale and zero point are in `ExportResult.inputs` / `.outputs`);
        default float32 inputs and outputs.
      max_samples: at most this many inputs are used for calibration and checks.
      compact: "auto" (default): a baked SmartModel trade-off whose masks drop
        whole output channels (`design_masks(..., granularity="channel")`) is
        exported physically narrower, `strip(..., compact=True)`, and checked
        against the SmartModel; anything else in the dense layout. True:
        always compact (refused for masks that are not channel-structured);
        False: never.

    Returns:
      An `ExportResult` (path, size, check numbers, operators, signature,
      executed and non-zero MACs).

    Raises:
      TypeError: `model` is not a Keras model; bad argument types.
      ValueError: a trade-off outside [0, 1], `tradeoff` with
        `runtime_tradeoff`, a trade-off for a plain model, `compact` with
        `runtime_tradeoff` or a plain model or masks that are not
        channel-structured, an unknown
        `quantize`, int8 without `representative_data`, a model with several
        inputs or outputs, a model still wrapped for TF-MOT pruning, a
        quantization-aware model without quantize="int8", a missing destination
        directory.
      ExportError: the conversion needs non-builtin operators or fails, LiteRT
        cannot load or prepare the file, or the check fails. No file is left.

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "robust.tflite")
      >>> result = keras_smart.export.to_tflite(smart, path, tradeoff=1.0, check_data=x[:8])
      >>> result.tradeoff, result.runtime_tradeoff, result.check_samples, result.max_abs_diff <= 1e-4
      (1.0, False, 8, True)
      >>> [(tensor["name"], tensor["shape"], tensor["dtype"]) for tensor in result.inputs]
      [('input', [-1, 28, 28, 1], 'float32')]
      >>> "CONV_2D" in result.ops, os.path.getsize(path) == result.size_bytes
      (True, True)
    """
    options = options_lib.check_options(
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
        compact=compact,
    )
    path = _check_path(path)
    representative, check = samples(model, representative_data, check_data, options.max_samples)
    exported, exported_options = conversion.exported_model(model, options)
    data = conversion.tflite_bytes(exported, exported_options, representative)
    result = files.write_checked(
        data, path, lambda temporary: verify.verify(model, temporary, path, options, check)
    )
    executed, nonzero = macs.file_macs(exported, options.runtime_tradeoff)
    return dataclasses.replace(result, executed_macs=executed, nonzero_macs=nonzero)


def _check_path(path):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"The directory of `path` does not exist: {directory!r}. Create it first.")
    if os.path.isdir(path):
        raise ValueError(f"`path` must be a file name, not a directory. Received: path={path!r}")
    return path


def samples(model, representative_data, check_data, max_samples):
    """(calibration inputs or None, check inputs): float32 arrays of at most `max_samples` inputs."""
    input_shape = tuple(model.inputs[0].shape)

    def read(data, arg_name):
        return inputs.to_arrays(
            data, labels=False, max_examples=max_samples, input_shape=input_shape, arg_name=arg_name
        )

    representative = None if representative_data is None else read(representative_data, "representative_data")
    if check_data is not None:
        return representative, read(check_data, "check_data")
    if representative is not None:
        return representative, representative
    return None, np.random.default_rng(0).random((32,) + input_shape[1:]).astype("float32")
