"""Magnitude pruning that composes with conditional layers: native gradual pruning and a TF-MOT bridge.

A pruned weight is zero on every path. Per kernel, pruning keeps one binary
*pruning mask* P (the weights still alive) and maintains:

    W <- W * P                    (the stored kernel: what a file holds)
    M_path <- M_path * P          (SMART's two masks, FLOATS' one mask)

so that after every update the non-zeros of W are exactly the union of the
path masks (SMART), the mask (FLOATS) or all of W (FLOAT, OAT, plain layers),
and every path computes with zeros where P is zero. FLOAT's weight noise is
drawn only on non-zero weights, so the noisy path keeps the zeros too.

P is the top `round((1 - s) * size)` of |W| among the weights some path still
uses (`s` = the sparsity level): weights that no path uses (outside the union
of SMART's masks) are pruned first, then the smallest used ones. Levels only
grow, so pruning is monotone: a pruned weight never comes back. The level is
per kernel, so every kernel of every layer reaches it (a kernel whose paths
already use fewer weights is sparser).

The modules, in the order of the flow:
- `schedule`: `PolynomialDecay` (TF-MOT's formula), in optimizer steps.
- `kernels`: which kernels are pruned; each carries its settings as its
  constraint (`KernelPruning`), so they are part of the model's config.
- `native`: `prune(model, target_sparsity, schedule=...)` (both Keras flavours;
  the only way on Keras 3, which TF-MOT does not accept) prunes in place, one
  shot or gradually; `pruning_level`, `kernel_sparsity`, `strip_pruning`.
- `callbacks`: `UpdatePruning`, the `fit` callback that keeps the zeros and
  follows the schedule (for native and TF-MOT pruning alike).
- `tfmot`: `prune_low_magnitude(model, **tfmot_options)` (tf_keras only):
  TF-MOT's wrappers around the conditional layers' kernels (their
  `get_prunable_weights`), returning a SmartModel that still trains
  adversarially, its schedule counting optimizer steps; TF-MOT is imported
  only inside these functions.
- `qat`: pruning-preserving quantization-aware training (`quantize_aware`,
  tf_keras only) with TF-MOT's `Default8BitPrunePreserveQuantizeScheme`, on
  the model folded at one trade-off.

Native pruning keeps no state outside the model: the settings are in its
config, P is the kernels' zeros and the step is the optimizer's, so a `.keras`
file and `keras.callbacks.BackupAndRestore` resume the schedule exactly.
(One exception: MultiHeadAttention rebuilds its projections from its own
config, so after a `.keras` load its projections are no longer marked as
pruned; their zeros stay, but `UpdatePruning` does not keep them.)
"""

from keras_smart.pruning.callbacks import UpdatePruning
from keras_smart.pruning.kernels import KernelPruning
from keras_smart.pruning.native import kernel_sparsity
from keras_smart.pruning.native import prune
from keras_smart.pruning.native import pruning_level
from keras_smart.pruning.native import strip_pruning
from keras_smart.pruning.qat import quantize_aware
from keras_smart.pruning.schedule import PolynomialDecay
from keras_smart.pruning.tfmot import prune_low_magnitude

__all__ = [
    "KernelPruning",
    "PolynomialDecay",
    "UpdatePruning",
    "kernel_sparsity",
    "prune",
    "prune_low_magnitude",
    "pruning_level",
    "quantize_aware",
    "strip_pruning",
]
