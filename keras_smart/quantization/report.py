"""QuantizationReport: the bits, size and channel sparsity of the kernels a model computes with."""

import dataclasses
import math

import numpy as np

from keras_smart import _compat
from keras_smart import registry
from keras_smart import training
from keras_smart import validation
from keras_smart.conversion import get_tradeoff
from keras_smart.layers import base
from keras_smart.layers import quantized

keras = _compat.keras

FLOAT_BITS = 32
_SCALE_BYTES = 4  # one float32 scale per tensor, or per output channel


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    """What `report` measured: one row per kernel, and the model's totals.

    Attributes:
      tradeoff: the trade-off the kernels were read at (None for a plain model).
      rows: one dict per kernel, in layer order: {"layer", "kernel", "bits"
        (BITS_PER_WEIGHT of the layer's quantization; 32 for a float kernel),
        "weights", "nonzero", "channels" (output channels), "zero_channels"
        (output channels whose kernel slice is all zero on this path),
        "scales" (stored scales: 1, one per output channel, 0 for a float
        kernel), "pure" (the layer computes with exactly quantized kernels:
        relax_eta is +inf, as after `finalize`; True for a float kernel)}.
      bits_per_weight: the mean bits of a kernel weight, weighted by kernel size.
      size_bytes: the model's weights stored at those bits: each quantized
        kernel packed (ceil(weights * bits / 8) bytes) plus 4 bytes per scale,
        every other weight (float kernels, biases, normalisation) 4 bytes.
      float_size_bytes: the same weights all stored as float32.
      channel_sparsity: zero channels / channels over the quantized kernels
        (0.0 when none is quantized).
      nonzero: the non-zero kernel weights (every kernel) on this path.
      weights: every weight the model computes with (what float_size_bytes counts).
    """

    tradeoff: object
    rows: tuple
    bits_per_weight: float
    size_bytes: int
    float_size_bytes: int
    channel_sparsity: float
    nonzero: int
    weights: int

    @property
    def pure(self):
        """Whether every quantized kernel is exactly quantized (relax_eta = +inf, e.g. after `finalize`)."""
        return all(row["pure"] for row in self.rows)

    def as_dict(self):
        """The report as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def to_markdown(self):
        """One Markdown table, a row per kernel, then a line of totals."""
        lines = [
            "| layer | kernel | bits | weights | non-zeros | zero channels |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for row in self.rows:
            lines.append(
                f"| {row['layer']} | {row['kernel']} | {row['bits']} | {row['weights']} | {row['nonzero']} | "
                f"{row['zero_channels']} / {row['channels']} |"
            )
        ratio = self.size_bytes / self.float_size_bytes if self.float_size_bytes else 1.0
        lines += [
            "",
            f"{self.bits_per_weight:.2f} bits per kernel weight; {self.size_bytes} bytes "
            f"({ratio:.1%} of float32's {self.float_size_bytes}); channel sparsity {self.channel_sparsity:.1%}"
            + ("" if self.pure else "; still relaxed: call keras_smart.quantization.finalize(model)")
            + ".",
        ]
        return "\n".join(lines)


def report(model, tradeoff=None):
    """Bits, size and channel sparsity of the kernels `model` computes with at `tradeoff`.

    Kernels are read as the model computes with them: a conditional layer's
    kernels folded at `tradeoff` (masks applied, relaxed or quantized at the
    layer's relax_eta), a plain layer's as they are. A kernel of a layer that
    `keras_smart.quantization.binary_relax` quantized counts at its bits
    (binary 1, ternary 2, int4 4); every other kernel at 32. Sizes are those of
    a packed file of the finalized model: call `finalize` first (or check
    `QuantizationReport.pure`), since a relaxed kernel is not yet on its levels.

    Args:
      model: a Keras model, e.g. what `binary_relax` returns.
      tradeoff: for a SmartModel, the trade-off in [0, 1] whose path is read
        (None: the model's current one). Must be None for a plain model.

    Returns:
      A `QuantizationReport`.

    Raises:
      TypeError: `model` is not a Keras model.
      ValueError: a trade-off outside [0, 1], or a trade-off for a plain model.

    Example:
      >>> from keras_smart import quantization
      >>> relaxed = quantization.finalize(quantization.binary_relax(cnn, "ternary"))
      >>> result = quantization.report(relaxed)
      >>> [(row["layer"], row["bits"], row["weights"]) for row in result.rows]
      [('conv', 2, 72), ('logits', 32, 80)]
      >>> # 202 weights; conv's 72 at 2 bits (18 bytes) + one 4-byte scale, the other 130 at 4 bytes
      >>> result.float_size_bytes, result.size_bytes
      (808, 542)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`report` expects a keras.Model. Received: {type(model).__name__}")
    tradeoff = _tradeoff(model, tradeoff)
    path = 0.0 if tradeoff is None else tradeoff
    rows, packed_bytes, packed_weights = [], 0, 0
    for layer in _compat.flatten_layers(model):
        for name, kernel in _kernels(layer, path):
            row = _row(layer, name, kernel)
            rows.append(row)
            if row["bits"] < FLOAT_BITS:
                packed_bytes += math.ceil(row["weights"] * row["bits"] / 8) + _SCALE_BYTES * row["scales"]
                packed_weights += row["weights"]
    weights = _weight_count(model, path)
    kernel_weights = sum(row["weights"] for row in rows)
    quantized_rows = [row for row in rows if row["bits"] < FLOAT_BITS]
    channels = sum(row["channels"] for row in quantized_rows)
    return QuantizationReport(
        tradeoff=tradeoff,
        rows=tuple(rows),
        bits_per_weight=sum(r["bits"] * r["weights"] for r in rows) / kernel_weights if kernel_weights else 0.0,
        size_bytes=int(packed_bytes + 4 * (weights - packed_weights)),
        float_size_bytes=4 * weights,
        channel_sparsity=sum(row["zero_channels"] for row in quantized_rows) / channels if channels else 0.0,
        nonzero=sum(row["nonzero"] for row in rows),
        weights=weights,
    )


def _tradeoff(model, tradeoff):
    if isinstance(model, training.SmartModel):
        return get_tradeoff(model) if tradeoff is None else validation.check_tradeoff(tradeoff)
    if tradeoff is not None:
        raise ValueError(
            f"Model '{model.name}' is a plain Keras model ({type(model).__name__}); it has no trade-off. "
            f"Leave `tradeoff` unset. Received: tradeoff={tradeoff!r}"
        )
    return None


def _kernels(layer, tradeoff):
    """[(kernel name, NumPy kernel)] of one layer as it computes with them at `tradeoff`."""
    names = registry.kernel_names(layer)
    if not names:
        return []
    if isinstance(layer, base.ConditionalLayer):
        folded = layer.folded_weights(tradeoff)
        return [(name, np.asarray(folded[name])) for name in names]
    return [(name, np.asarray(getattr(layer, name).numpy())) for name in names]


def _row(layer, name, kernel):
    quantization = getattr(layer, "quantization", None)
    axes = channel_axes(layer, name)
    rank = kernel.ndim
    axes = tuple(sorted(a % rank for a in axes))
    other = tuple(a for a in range(rank) if a not in axes)
    zero = ~np.any(kernel != 0, axis=other)
    channels = int(np.prod([kernel.shape[a] for a in axes]))
    bits = FLOAT_BITS if quantization is None else quantized.BITS_PER_WEIGHT[quantization["bits"]]
    scales = 0 if quantization is None else (channels if quantization["per_channel"] else 1)
    eta = getattr(layer, "relax_eta", None)
    return {
        "layer": layer.name,
        "kernel": name,
        "bits": bits,
        "weights": int(kernel.size),
        "nonzero": int(np.count_nonzero(kernel)),
        "channels": channels,
        "zero_channels": int(np.sum(zero)),
        "scales": scales,
        "pure": quantization is None or (eta is not None and quantized.is_pure(eta.numpy())),
    }


def channel_axes(layer, kernel_name):
    """The axes of a kernel that index output channels, for conditional and plain layers alike.

    Conditional layers answer for themselves (`layer.channel_axes`); plain
    layers by class: Conv2DTranspose (-2,), depthwise kernels (-2, -1), every
    other kernel (-1,).
    """
    if hasattr(layer, "channel_axes"):
        return tuple(layer.channel_axes(kernel_name))
    if kernel_name == "depthwise_kernel" or isinstance(layer, keras.layers.DepthwiseConv2D):
        return (-2, -1)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return (-2,)
    return (-1,)


def _weight_count(model, tradeoff):
    """Every weight `model` computes with: conditional layers folded at `tradeoff`, each variable once."""
    seen, total = set(), 0
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, keras.Model):
            continue
        ids = {id(v) for v in layer.weights}
        if ids <= seen:
            continue
        if isinstance(layer, base.ConditionalLayer):
            total += sum(np.size(v) for v in layer.folded_weights(tradeoff).values())
        else:
            total += sum(int(np.prod(v.shape)) for v in layer.weights if id(v) not in seen)
        seen |= ids
    return total
