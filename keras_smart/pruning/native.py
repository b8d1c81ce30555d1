"""keras_smart's own gradual magnitude pruning (both Keras flavours): prune, measure, finish."""

import numpy as np

from keras_smart import _compat
from keras_smart.layers import conditional_kernel as ck
from keras_smart.pruning import kernels as kernels_lib
from keras_smart.pruning import schedule as schedule_lib
from keras_smart.pruning import tfmot

keras = _compat.keras


def _check_model(model, caller):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{caller}` expects a Keras model. Received: {type(model).__name__}")


def prune(model, target_sparsity, *, schedule=None, layers=None):
    """Prunes a model's kernels by magnitude, in place, so that a pruned weight is zero on every path.

    With `schedule=None` the kernels are pruned to `target_sparsity` now (one
    shot). With a `PolynomialDecay` schedule they are pruned to the schedule's
    level at the optimizer's current step, and the level grows during `fit`,
    reaching `target_sparsity` at `schedule.end_step`. Either way, train with
    `UpdatePruning()` among `fit`'s callbacks: it keeps pruned weights at zero
    (the optimizer moves them) and follows the schedule.

    The settings live in the model (each pruned kernel's constraint, see
    `KernelPruning`) and the state in its weights (the zeros, the optimizer's
    step), so a `.keras` file or `keras.callbacks.BackupAndRestore` resumes
    the schedule where it stopped. Pruning again replaces the settings; the
    zeros stay (levels only grow). Works on SmartModels of every method and on
    plain Keras models, in both Keras flavours. See `keras_smart.pruning` for
    how pruning composes with SMART's and FLOATS' path masks.

    Args:
      model: a built Keras model (SmartModel or plain).
      target_sparsity: the final share of each kernel's weights set to zero, in (0, 1).
      schedule: None (one shot) or a `PolynomialDecay`.
      layers: None (every layer with a kernel, see
        `keras_smart.registry.kernel_names`: convolutions, Dense, EinsumDense,
        conditional or plain, nested models included) or the names of the
        layers to prune.

    Returns:
      `model` itself, pruned.

    Raises:
      TypeError: `model` is not a Keras model, or bad argument types.
      ValueError: a sparsity outside (0, 1), an unknown layer name, a model
        without prunable layers, or a model wrapped by TF-MOT.

    Example:
      >>> schedule = keras_smart.pruning.PolynomialDecay(begin_step=0, end_step=4, frequency=2)
      >>> smart = keras_smart.pruning.prune(smart, 0.75, schedule=schedule)
      >>> smart.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      >>> history = smart.fit(x, y, batch_size=16, epochs=1, verbose=0,
      ...                     callbacks=[keras_smart.pruning.UpdatePruning()])
      >>> keras_smart.pruning.pruning_level(smart)  # 4 optimizer steps: the end of the schedule
      0.75
    """
    _check_model(model, "prune")
    settings = kernels_lib.KernelPruning(target_sparsity, schedule)
    selected = kernels_lib.select(model, layers)
    level = settings.level(schedule_lib.optimizer_step(model))
    for kernel in selected:
        kernel.prune_to(level)  # level 0: the weights no path uses are zeroed
    chosen = {(id(kernel.layer), kernel.kernel_name) for kernel in selected}
    for kernel in kernels_lib.all_kernels(model):
        if (id(kernel.layer), kernel.kernel_name) in chosen:
            kernel.mark(settings)
        else:
            kernel.unmark()
    return model


def pruning_level(model):
    """The sparsity level `prune`'s schedule puts `model` at now (None if `prune` does not prune it).

    The schedule reads the optimizer's step: this is the level `UpdatePruning`
    keeps the model at during `fit`, and the one it resumes from after a
    `.keras` save and load.

    Example:
      >>> smart = keras_smart.pruning.prune(smart, 0.5)
      >>> keras_smart.pruning.pruning_level(smart)
      0.5
    """
    _check_model(model, "pruning_level")
    pruned = kernels_lib.pruned_kernels(model)
    if not pruned:
        return None
    step = schedule_lib.optimizer_step(model)
    return max(kernel.pruning.level(step) for kernel in pruned)


def kernel_sparsity(model):
    """{"layer/kernel": share of the kernel's positions that are zero on every path}.

    Covers every kernel `keras_smart.registry.kernel_names` knows, conditional
    or plain (noise at its expectation).

    Example:
      >>> smart = keras_smart.pruning.prune(smart, 0.75)
      >>> {name: round(value, 2) for name, value in keras_smart.pruning.kernel_sparsity(smart).items()}
      {'conv/kernel': 0.75, 'logits/kernel': 0.75}
    """
    _check_model(model, "kernel_sparsity")
    result = {}
    for kernel in kernels_lib.all_kernels(model):
        used = np.asarray(kernel.variable.numpy()) != 0
        layer = kernel.layer
        if isinstance(layer, ck.ConditionalKernel) and layer.mask_kind:
            used &= np.any([m > 0 for m in layer.kernel_masks(kernel.kernel_name).values()], axis=0)
        result[kernel.name] = float(1.0 - used.mean())
    return result


def strip_pruning(model):
    """Finishes pruning: the model without pruning machinery, its pruned weights zero on every path.

    - A model wrapped by TF-MOT (via `prune_low_magnitude`, tf_keras): TF-MOT's
      `strip_pruning`, then, for a SmartModel, the result is a SmartModel with
      the same trade-off whose path masks are intersected with the kernels'
      non-zeros (so `count_nonzero` and the masks agree).
    - A model pruned by `prune`: its kernels keep their zeros and their own
      constraints again; `UpdatePruning` no longer applies. `model` is returned.
    - Any other model is returned as it is.

    Example:
      >>> smart = keras_smart.pruning.prune(smart, 0.5)
      >>> keras_smart.pruning.strip_pruning(smart) is smart
      True
      >>> print(keras_smart.pruning.pruning_level(smart))
      None
    """
    _check_model(model, "strip_pruning")
    if kernels_lib.tfmot_wrappers(model):
        return tfmot.strip_wrappers(model)
    for kernel in kernels_lib.pruned_kernels(model):
        kernel.unmark()
    return model


__all__ = ["kernel_sparsity", "prune", "pruning_level", "strip_pruning"]
