"""What an export produces: its error, its result, and the names of the file's signature tensors."""

import dataclasses

INPUT_NAME = "input"
TRADEOFF_NAME = "tradeoff"
OUTPUT_NAME = "output"


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
      runtime_tradeoff: whether the trade-off is the file's second input ("tradeoff").
      max_abs_diff: the largest |LiteRT - Keras| over the check inputs (and check trade-offs).
      agreement: the share of check inputs whose top-1 class matches Keras (for 8-bit files: or is
        within one 8-bit step, (max - min logit) / 255, of Keras' top logit: a tie the file cannot resolve).
      check_samples: how many inputs were compared (per trade-off).
      check_tradeoffs: the trade-offs a runtime-trade-off file was checked at.
      ops: the builtin operators the file uses, sorted.
      inputs, outputs: ({"name", "shape", "dtype", "quantization"}, ...) of the file's signature;
        shape -1 marks the batch dimension.
      executed_macs: the kernel multiply-accumulates the file runs per example, zeros included;
        None when a shape is not static (`keras_smart.export.macs.file_macs`).
      nonzero_macs: those with a non-zero weight in its baked kernels; None for a runtime-trade-off file.
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
    executed_macs: object = None
    nonzero_macs: object = None

    def as_dict(self):
        """The result as a plain dict (JSON-able)."""
        return dataclasses.asdict(self)
