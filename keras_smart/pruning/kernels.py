"""What native pruning prunes: the kernels, the pruning settings each one carries, and the magnitude update.

A kernel pruned by `prune` is marked by its layer's constraint for it
(`kernel_constraint`, `depthwise_constraint`, `pointwise_constraint`): a
`KernelPruning` that holds the target and the schedule, and wraps the
kernel's own constraint, which still applies. The constraint is part of the
layer's config, so the settings travel with the model: `.keras` files,
`clone_model`, `convert` and `strip`. The rest of the state is the weights
themselves: a pruned weight is a zero kernel entry, and the schedule reads the
optimizer's step counter. `.keras` files and `keras.callbacks.BackupAndRestore`
keep both, so a restored model goes on pruning where it stopped.
"""

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import registry
from keras_smart import validation
from keras_smart.layers import conditional_kernel as ck
from keras_smart.pruning import schedule as schedule_lib

keras = _compat.keras

TFMOT_WRAPPER = "PruneLowMagnitude"  # TF-MOT's pruning wrapper, by name (TF-MOT is imported only when used)


@_compat.register_serializable
class KernelPruning(keras.constraints.Constraint):
    """A kernel's native pruning settings, kept as its constraint so that the layer's config holds them.

    Calling it applies the kernel's own constraint (`constraint`, None: the
    kernel is returned as it is): pruning itself is `UpdatePruning`'s work.

    Args:
      target_sparsity: the final share of the kernel's weights set to zero, in (0, 1).
      schedule: None (one shot) or a `PolynomialDecay` (or its config).
      constraint: the kernel's own constraint, or None.

    Example:
      >>> settings = keras_smart.pruning.KernelPruning(0.8, keras_smart.pruning.PolynomialDecay(end_step=100))
      >>> settings.level(50)  # the level in force after 50 optimizer steps (an update every 100)
      0.0
      >>> settings.level(100)
      0.8
    """

    def __init__(self, target_sparsity, schedule=None, constraint=None):
        self.target_sparsity = validation.check_real(
            target_sparsity, "target_sparsity", low=0.0, high=1.0, low_open=True, high_open=True,
            meaning="(the share of each kernel's weights set to zero)",
        )
        if isinstance(schedule, dict):
            schedule = schedule_lib.PolynomialDecay.from_config(schedule)
        if schedule is not None and not isinstance(schedule, schedule_lib.PolynomialDecay):
            raise TypeError(
                "`schedule` must be None (one shot) or a keras_smart.pruning.PolynomialDecay. "
                f"Received: schedule of type {type(schedule).__name__}"
            )
        if schedule is not None and schedule.initial_sparsity > self.target_sparsity:
            raise ValueError(
                f"`schedule.initial_sparsity` ({schedule.initial_sparsity}) must not exceed "
                f"`target_sparsity` ({self.target_sparsity})."
            )
        self.schedule = schedule
        self.constraint = keras.constraints.get(constraint)

    def __call__(self, w):
        return w if self.constraint is None else self.constraint(w)

    def level(self, step):
        """The sparsity level in force after optimizer step `step`."""
        if self.schedule is None:
            return self.target_sparsity
        return self.schedule.level(step, self.target_sparsity)

    def with_constraint(self, constraint):
        """The same settings around another constraint of the kernel's own."""
        return KernelPruning(self.target_sparsity, self.schedule, constraint)

    def __repr__(self):
        return f"KernelPruning(target_sparsity={self.target_sparsity}, schedule={self.schedule})"

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "schedule": None if self.schedule is None else self.schedule.get_config(),
            "constraint": keras.constraints.serialize(self.constraint),
        }


def _constraint_attribute(layer, kernel_name):
    """The attribute holding the constraint of kernel `kernel_name` (its name in the layer's config too)."""
    if kernel_name == "pointwise_kernel":
        return "pointwise_constraint"
    if kernel_name == "depthwise_kernel" or isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise_constraint"
    return "kernel_constraint"


class Kernel:
    """One prunable kernel: its layer, its variable, the path masks over it, its pruning settings."""

    def __init__(self, layer, kernel_name):
        self.layer = layer
        self.kernel_name = kernel_name
        self._attribute = _constraint_attribute(layer, kernel_name)

    @property
    def name(self):
        return f"{self.layer.name}/{self.kernel_name}"

    @property
    def variable(self):
        return getattr(self.layer, self.kernel_name)

    @property
    def mask_names(self):
        """The names of the path masks over the kernel (SMART: two, FLOATS: one, others: none)."""
        if not isinstance(self.layer, ck.ConditionalKernel):
            return ()
        return self.layer.mask_names(self.kernel_name)

    def mask_tensors(self):
        """The path masks as float32 0/1 tensors of the kernel's shape (in a graph too)."""
        return [self.layer.mask_tensor(n, tf.float32) for n in self.mask_names]

    def multiply_masks(self, keep):
        """Multiplies every path mask by the 0/1 `keep` (NumPy eagerly, or a tensor in a graph too)."""
        for name in self.mask_names:
            if tf.is_tensor(keep):
                self.layer.assign_mask(name, self.layer.mask_tensor(name, keep.dtype) * keep)
            else:
                self.layer.assign_mask(name, self.layer.mask_value(name) * keep)

    @property
    def pruning(self):
        """The kernel's `KernelPruning` settings, or None when `prune` does not prune it."""
        constraint = getattr(self.layer, self._attribute, None)
        return constraint if isinstance(constraint, KernelPruning) else None

    def mark(self, settings):
        """Makes `settings` (a `KernelPruning`) this kernel's, around the kernel's own constraint."""
        own = self.pruning.constraint if self.pruning is not None else getattr(self.layer, self._attribute, None)
        setattr(self.layer, self._attribute, settings.with_constraint(own))

    def unmark(self):
        """Gives the kernel its own constraint back: `prune` no longer prunes it."""
        if self.pruning is not None:
            setattr(self.layer, self._attribute, self.pruning.constraint)

    def used(self):
        """Weights that some path computes with (non-zero and inside the union of the masks)."""
        used = np.asarray(self.variable.numpy()) != 0
        if self.mask_names:
            used &= np.any([self.layer.mask_value(n) > 0 for n in self.mask_names], axis=0)
        return used

    def prune_to(self, level):
        """Keeps the top `round((1 - level) * size)` of |W| among the used weights; zeroes the rest, masks too."""
        kernel = np.asarray(self.variable.numpy())
        used = self.used()
        keep = min(int(round((1.0 - level) * kernel.size)), int(used.sum()))
        order = np.argsort(-np.where(used, np.abs(kernel), -1.0).ravel(), kind="stable")
        alive = np.zeros(kernel.size, kernel.dtype)
        alive[order[:keep]] = 1
        alive = alive.reshape(kernel.shape)
        self.variable.assign(kernel * alive)
        self.multiply_masks(alive)


def tfmot_wrappers(model):
    """The TF-MOT pruning wrappers in `model` (empty for a model TF-MOT does not prune)."""
    return [l for l in _compat.flatten_layers(model) if type(l).__name__ == TFMOT_WRAPPER]


def all_kernels(model):
    """Every kernel of `model` that `registry.kernel_names` knows, TF-MOT's wrappers left out."""
    return [
        Kernel(layer, name)
        for layer in _compat.flatten_layers(model)
        if type(layer).__name__ != TFMOT_WRAPPER
        for name in registry.kernel_names(layer)
    ]


def pruned_kernels(model):
    """The kernels of `model` that `prune` prunes (those carrying a `KernelPruning`)."""
    return [k for k in all_kernels(model) if k.pruning is not None]


def select(model, layer_names):
    """The kernels `prune(model, ..., layers=layer_names)` prunes; raises, changing nothing, if it cannot."""
    wrapped = [l.name for l in tfmot_wrappers(model)]
    if wrapped:
        raise ValueError(
            f"Model '{model.name}' is wrapped for TF-MOT pruning ({wrapped[:3]}...). Use one pruning "
            "mechanism: keras_smart.pruning.strip_pruning(model) first, or keep TF-MOT's."
        )
    kernels = all_kernels(model)
    if layer_names is not None:
        layer_names = [layer_names] if isinstance(layer_names, str) else list(layer_names)
        known = {k.layer.name for k in kernels}
        unknown = sorted(set(layer_names) - known)
        if unknown:
            raise ValueError(f"No prunable layer named {unknown}. Prunable layers: {sorted(known)}")
        kernels = [k for k in kernels if k.layer.name in layer_names]
    if not kernels:
        raise ValueError(
            f"Model '{model.name}' has no prunable layers (layers with kernels: convolutions, Dense, "
            "EinsumDense, or their conditional versions)."
        )
    for kernel in kernels:
        if not kernel.layer.built:
            raise ValueError(f"Layer '{kernel.layer.name}' is not built: call the model on an input first.")
    return kernels


__all__ = ["KernelPruning", "Kernel", "all_kernels", "pruned_kernels", "select", "tfmot_wrappers"]
