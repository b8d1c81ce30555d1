"""The check a `.tflite` file passes before it is kept: builtin operators, LiteRT's default delegate, parity with Keras."""

import os

import numpy as np

from keras_smart.export.result import INPUT_NAME
from keras_smart.export.result import OUTPUT_NAME
from keras_smart.export.result import TRADEOFF_NAME
from keras_smart.export.result import ExportError
from keras_smart.export.result import ExportResult
from keras_smart.layers import base


def verify(model, temporary, path, options, check):
    """Loads the file with the default delegate, runs it on `check` and compares it with Keras.

    Args:
      model: the Keras model the file was converted from.
      temporary: the file to check.
      path: where it will be kept (named in the result and in errors).
      options: the export's `ExportOptions`.
      check: float32 check inputs.

    Returns:
      An `ExportResult` for `path`.

    Raises:
      ExportError: non-builtin operators, a file LiteRT cannot load or prepare,
        or outputs too far from Keras.
    """
    ops, runner = load(temporary)
    tradeoffs = options.check_tradeoffs if options.runtime_tradeoff else (options.tradeoff,)
    max_diff, agreement = _compare(model, runner, check, tradeoffs, options)
    require_parity(max_diff, agreement, len(check), tradeoffs, options, path)
    return ExportResult(
        path=path,
        size_bytes=os.path.getsize(temporary),
        quantize=options.quantize,
        tradeoff=options.tradeoff,
        runtime_tradeoff=options.runtime_tradeoff,
        max_abs_diff=max_diff,
        agreement=agreement,
        check_samples=len(check),
        check_tradeoffs=tuple(options.check_tradeoffs),
        ops=ops,
        inputs=tensor_details(runner.get_input_details()),
        outputs=tensor_details(runner.get_output_details()),
    )


def builtin_operators(path):
    """The operators a `.tflite` file uses, sorted; raises `ExportError` for non-builtin ones.

    Read from the file's flatbuffer (every subgraph) with LiteRT's public schema
    module, so custom and Flex operators are found without running the file.
    """
    from ai_edge_litert import schema_py_generated as schema  # pylint: disable=g-import-not-at-top

    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(f.read(), 0)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    used = {
        model.Subgraphs(s).Operators(o).OpcodeIndex()
        for s in range(model.SubgraphsLength())
        for o in range(model.Subgraphs(s).OperatorsLength())
    }
    builtin, custom = set(), set()
    for index in used:
        code = model.OperatorCodes(index)
        number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # codes above 127 use the new field
        name = names.get(number, str(number))
        if code.CustomCode() or name in ("CUSTOM", "DELEGATE"):
            custom.add((code.CustomCode() or b"").decode("utf-8", "replace") or name)
        else:
            builtin.add(name)
    if custom:
        raise ExportError(
            f"The file would need non-builtin operators {sorted(custom)}; Android's default LiteRT runtime "
            "runs builtin operators only."
        )
    return tuple(sorted(builtin))


def interpreter(path):
    """A LiteRT interpreter of `path` with its default (XNNPACK) delegate, as Android's default runtime."""
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top

    return litert.Interpreter(model_path=path, experimental_op_resolver_type=litert.OpResolverType.AUTO)


def tensor_details(details):
    """A signature's tensors as ({"name", "shape", "dtype", "quantization"}, ...), by name; batch is -1."""
    rows = []
    for name, detail in sorted(details.items()):
        scale, zero_point = detail["quantization"]
        rows.append(
            {
                "name": name,
                "shape": [int(s) for s in detail.get("shape_signature", detail["shape"])],
                "dtype": np.dtype(detail["dtype"]).name,
                "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if scale else None,
            }
        )
    return tuple(rows)


def load(path):
    """(operators, signature runner) of a file LiteRT loads and prepares with its default delegate."""
    try:
        ops = builtin_operators(path)
        loaded = interpreter(path)
        loaded.allocate_tensors()  # applies the default delegate: fails here if it cannot prepare
        return ops, loaded.get_signature_runner("serving_default")
    except ExportError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise ExportError(
            f"LiteRT could not load or prepare the file with its default (XNNPACK) delegate: {e}. "
            "Android's default runtime would fail the same way."
        ) from e


def _compare(model, runner, check, tradeoffs, options):
    """(max abs difference, top-1 agreement) of the file against Keras over `check` at each trade-off."""
    max_diff, agree, total = 0.0, 0, 0
    for tradeoff in tradeoffs:
        got = _litert_outputs(runner, check, tradeoff if options.runtime_tradeoff else None)
        expected = _keras_outputs(model, check, tradeoff, options.smart)
        diff, agreed, compared = compare_outputs(got, expected, tie_tolerance(expected, options.quantize))
        max_diff, agree, total = max(max_diff, diff), agree + agreed, total + compared
    return max_diff, agree / max(total, 1)


def compare_outputs(got, expected, tie=0.0):
    """(max abs difference, examples whose top-1 class agrees, examples) of LiteRT logits against Keras'.

    The difference is in units of the largest Keras output magnitude when that exceeds 1: float32
    round-off grows with the size of the logits, so large logits are compared relatively. The file's
    top-1 class agrees when its Keras logit is within `tie` of the Keras top logit (`tie_tolerance`)."""
    if got.shape != expected.shape:
        raise ExportError(f"LiteRT output shape {got.shape} differs from Keras' {expected.shape}.")
    scale = max(1.0, float(np.max(np.abs(expected)))) if got.size else 1.0
    max_diff = float(np.max(np.abs(got - expected))) / scale if got.size else 0.0
    chosen = np.take_along_axis(expected, np.argmax(got, -1)[..., None], -1)[..., 0]
    agree = int(np.sum(chosen >= np.max(expected, -1) - tie))
    return max_diff, agree, int(np.prod(got.shape[:-1]))


def tie_tolerance(expected, quantize):
    """How close two Keras logits may be and still count as a tie for a file quantized by `quantize`.

    An 8-bit activation ("int8", and "dynamic", which quantizes activations on the fly) spans at least
    the logits' range in 255 steps, so logits closer than one step are a tie the file cannot resolve.
    Float and float16 files resolve them: no tolerance."""
    if quantize not in ("int8", "dynamic") or not expected.size:
        return 0.0
    return float(np.max(expected) - np.min(expected)) / 255.0


def _litert_outputs(runner, x, tradeoff):
    """The file's float32 outputs on `x` (`tradeoff`: its trade-off input, or None for a baked file)."""
    feeds = {INPUT_NAME: x}
    if tradeoff is not None:
        feeds[TRADEOFF_NAME] = np.array([tradeoff], np.float32)
    return run(runner, feeds)[OUTPUT_NAME]


def run(runner, feeds):
    """Runs a signature runner on float32 `feeds` ({input name: array}); returns {output name: float32 array}.

    Quantized inputs and outputs are converted with their scale and zero point.
    """
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    try:
        got = runner(**{name: to_input(value, inputs[name]) for name, value in feeds.items()})
    except Exception as e:  # pylint: disable=broad-except
        raise ExportError(f"LiteRT could not run the file: {e}") from e
    return {name: from_output(value, outputs[name]) for name, value in got.items()}


def to_input(value, detail):
    """`value` (float32) as the file's input `detail` wants it: cast, or quantized with its scale and zero point."""
    scale, zero_point = detail["quantization"]
    if not scale:
        return value.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(value / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def from_output(value, detail):
    """A file's output as float32: cast, or dequantized with its scale and zero point."""
    scale, zero_point = detail["quantization"]
    return value.astype("float32") if not scale else (value.astype("float32") - zero_point) * scale


def _keras_outputs(model, x, tradeoff, smart):
    if not smart:
        with base.expected_noise():  # a plain model's NoiseInjection layers, as exported
            return np.asarray(model(x, training=False), dtype="float32")
    with base.expected_noise(), base.tradeoff_override(float(tradeoff)):
        return np.asarray(model(x, training=False), dtype="float32")


def require_parity(max_diff, agreement, samples, tradeoffs, options, path):
    """Float files must match within `atol`; quantized ones must agree on top-1 often enough (else ExportError)."""
    where = f" at trade-offs {list(tradeoffs)}" if options.runtime_tradeoff else ""
    if options.quantize is None:
        if not max_diff <= options.atol:
            raise ExportError(
                f"The LiteRT file differs from the Keras model by up to {max_diff:.3g}{where} (allowed: "
                f"atol={options.atol:g}). No file was written to {path!r}."
            )
    elif not agreement >= options.min_agreement:
        raise ExportError(
            f"The {options.quantize} LiteRT file agrees with the Keras model's top-1 class (or a class tied "
            f"with it within one 8-bit step) on only {agreement:.1%} of {samples} check inputs{where} "
            f"(required: {options.min_agreement:.1%}). "
            "Give more representative calibration data, or a lower `min_agreement`. No file was written "
            f"to {path!r}."
        )
