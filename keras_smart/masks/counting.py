"""Counting a model's non-zero kernel weights and multiply-accumulates, per path and for their union."""

import dataclasses

import numpy as np

from keras_smart import _compat
from keras_smart import registry
from keras_smart.layers import base

keras = _compat.keras

_ROW_COUNTS = ("total", "clean", "adv", "union")


@dataclasses.dataclass(frozen=True)
class NonzeroCount:
    """Non-zero kernel weights and multiply-accumulates of a model, per path.

    Counts cover every kernel `keras_smart.registry.kernel_names` knows (Conv1D,
    Conv2D, Conv3D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D, Dense,
    EinsumDense, also inside MultiHeadAttention), conditional or plain; biases
    and normalisation are left out, and MACs count kernel multiplications only
    (not attention's activation products).
    `union` counts weights non-zero on either path: what a file holding both
    paths stores. MACs are per example, from each layer's first call; None when a
    layer's output shape is not static.

    Attributes:
      total: kernel weights of the dense model.
      clean, adv, union: non-zero kernel weights on each path / on either.
      macs_dense, macs_clean, macs_adv: MACs of the dense model / of each path.
      conditioning: weights that exist only to condition on lam (FiLM MLPs,
        noise scales, the second batch-norm set).
      unconverted: weights of the layers left plain (the same on both paths:
        layers `convert` skipped or has no conditional version of, such as LSTM
        or Embedding, and the layers a method shares by design, such as OAT's
        convolutions). Plain kernels also count in `total`, `clean`, `adv`.
      layers: {layer name: {"total", "clean", "adv", "union", "macs_clean", ...}}.
      unconverted_layers: {layer name: weights} of the layers left plain.
    """

    total: int
    clean: int
    adv: int
    union: int
    macs_dense: int
    macs_clean: int
    macs_adv: int
    conditioning: int
    layers: dict
    unconverted: int = 0
    unconverted_layers: dict = dataclasses.field(default_factory=dict)

    def as_dict(self):
        return dataclasses.asdict(self)


def count_nonzero(model):
    """Counts non-zero kernel weights and MACs per path and for the union of the paths.

    Args:
      model: a SmartModel (or any Keras model: both paths are then the same).

    Returns:
      A `NonzeroCount`.

    Example:
      >>> counts = keras_smart.count_nonzero(smart)
      >>> counts.total, counts.clean, counts.adv, counts.union  # conv 3x3x1x8 + logits 8x10, all kept
      (152, 152, 152, 152)
      >>> counts.layers["conv"]["macs_clean"]  # 72 weights at 26 x 26 output positions
      48672
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`count_nonzero` expects a keras.Model. Received: {type(model).__name__}")
    per_layer = {}
    conditioning = 0
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, base.ConditionalLayer):
            conditioning += _conditioning_weights(layer)
        if registry.kernel_names(layer):
            per_layer[layer.name] = _layer_counts(layer)
    unconverted = {l.name: int(l.count_params()) for l in base.plain_weight_layers(model)}

    def total(key):
        values = [row[key] for row in per_layer.values()]
        return None if any(v is None for v in values) else int(sum(values))

    return NonzeroCount(
        **{key: total(key) for key in (*_ROW_COUNTS, "macs_dense", "macs_clean", "macs_adv")},
        conditioning=conditioning,
        layers=per_layer,
        unconverted=sum(unconverted.values()),
        unconverted_layers=unconverted,
    )


def _layer_counts(layer):
    """{"total", "clean", "adv", "union", "macs_dense", "macs_clean", "macs_adv"} of one layer's kernels."""
    row = dict.fromkeys(_ROW_COUNTS, 0)
    for clean, adv in _path_kernels(layer):
        row["total"] += clean.size
        row["clean"] += int(np.count_nonzero(clean))
        row["adv"] += int(np.count_nonzero(adv))
        row["union"] += int(np.count_nonzero((clean != 0) | (adv != 0)))
    positions = registry.kernel_positions(layer)
    for key, count in (("macs_dense", row["total"]), ("macs_clean", row["clean"]), ("macs_adv", row["adv"])):
        row[key] = None if positions is None else positions * count
    return row


def _path_kernels(layer):
    """[(clean, adv)]: each kernel as the layer computes with it on each path, noise at its expectation."""
    names = registry.kernel_names(layer)
    if isinstance(layer, base.ConditionalLayer):
        clean, adv = layer.folded_weights(0.0), layer.folded_weights(1.0)
        return [(clean[name], adv[name]) for name in names]
    kernels = [np.asarray(getattr(layer, name).numpy()) for name in names]
    return [(kernel, kernel) for kernel in kernels]


def _conditioning_weights(layer):
    """How many weights `layer` holds only to condition on the trade-off (masks are counted as non-zeros)."""
    return int(sum(np.asarray(getattr(layer, n).numpy()).size for n in layer.conditioning_weight_names()))
