"""The multiply-accumulates a `.tflite` file runs per example, and the non-zero ones of the path it serves."""

import numpy as np

from keras_smart import _compat
from keras_smart.evaluation import rows
from keras_smart.layers import conditional_kernel as ck
from keras_smart.masks import counting


def file_macs(exported, runtime_tradeoff):
    """(executed MACs, non-zero MACs) per example of a file's kernels; each None if a shape is not static.

    Executed: every kernel multiply-accumulate the file runs, zeros included
    (LiteRT's default delegate runs kernels dense). A baked file (and a plain
    model's) runs the kernels of the Keras model it was converted from: the
    dense count of that model (`count_nonzero(exported).macs_dense`), which
    for `compact=True` is the narrower model. A runtime-trade-off file runs
    the same at every trade-off: each dual-mask layer whose two masks differ
    computes its layer once per path with that path's constant kernel and
    mixes the results (`keras_smart.layers.separate_paths`), so its kernels
    count twice; every other kernel counts once.

    Non-zero: the multiply-accumulates with a non-zero weight in the baked
    kernels (`count_nonzero(exported).macs_clean`); None for a
    runtime-trade-off file, whose trade-offs each have theirs (`nonzero_macs`).
    Biases, batch-norm and activations are not counted.

    Args:
      exported: the Keras model the file was converted from: the baked (possibly
        compacted) plain model, or the SmartModel of a runtime-trade-off file.
      runtime_tradeoff: whether the file takes the trade-off as an input.

    Returns:
      (executed, non-zero), ints or None.

    Example:
      >>> keras_smart.export.macs.file_macs(keras_smart.strip(smart, 0.0), runtime_tradeoff=False)  # 26*26*72 + 80
      (48752, 48752)
    """
    counts = counting.count_nonzero(exported)
    if not runtime_tradeoff:
        return counts.macs_dense, counts.macs_clean
    layers = {layer.name: layer for layer in _compat.flatten_layers(exported)}
    total = 0
    for name, row in counts.layers.items():
        if row["macs_dense"] is None:
            return None, None
        total += row["macs_dense"] * _passes(layers[name])
    return int(total), None


def _passes(layer):
    """How many times a runtime-trade-off file runs `layer`'s kernels (see `keras_smart.layers.separate_paths`)."""
    if not isinstance(layer, ck.ConditionalKernel) or layer.mask_kind != "dual":
        return 1
    if len(layer.kernel_names) > 1 and getattr(layer, "tradeoff_mode", None) == "blend":
        return 1  # two-kernel layers blend their kernels, then run once
    masks = [list(layer.kernel_masks(name).values()) for name in layer.kernel_names]
    return 1 if all(np.array_equal(clean, adv) for clean, adv in masks) else 2


def nonzero_macs(model, tradeoffs):
    """{trade-off: non-zero kernel MACs per example of the path it selects} (None: a plain model's).

    What the report's "non-zero MACs" column counts: the multiply-accumulates
    with a non-zero weight, not what a dense runtime executes.

    Example:
      >>> keras_smart.export.macs.nonzero_macs(smart, (0.0, 1.0))
      {0.0: 48752, 1.0: 48752}
    """
    counts = counting.count_nonzero(model)
    blend = any(getattr(l, "tradeoff_mode", None) == "blend" for l in _compat.flatten_layers(model))
    return {tradeoff: rows.path_counts(counts, tradeoff, blend)[1] for tradeoff in tradeoffs}
