"""`UpdatePruning`: the `fit` callback that keeps a pruned model pruned and its schedule on the optimizer's step."""

import tensorflow as tf

from keras_smart import _compat
from keras_smart.pruning import kernels as kernels_lib
from keras_smart.pruning import schedule as schedule_lib
from keras_smart.pruning import tfmot

keras = _compat.keras


class _NativeUpkeep:
    """Keeps the zeros of the kernels `prune` prunes across optimizer steps, and raises their level on schedule.

    Which weights are pruned is read from the model before every step (the zero
    kernel entries, and for SMART and FLOATS the entries outside every path
    mask), so nothing but the model's own weights and optimizer step carries
    state from one `fit` (or one process) to the next.
    """

    def __init__(self, kernels):
        self._kernels = kernels
        self._keep = [tf.Variable(tf.zeros(k.variable.shape, k.variable.dtype), trainable=False) for k in kernels]
        self._remember = tf.function(self._remember_eagerly)
        self._restore = tf.function(self._restore_eagerly)
        self._step = None  # the optimizer step the model's level belongs to

    def _remember_eagerly(self):
        for kernel, keep in zip(self._kernels, self._keep):
            used = tf.not_equal(kernel.variable, 0)
            if kernel.mask_names:
                used = tf.logical_and(used, tf.reduce_any(tf.stack([m > 0 for m in kernel.mask_tensors()]), axis=0))
            keep.assign(tf.cast(used, keep.dtype))

    def _restore_eagerly(self):
        for kernel, keep in zip(self._kernels, self._keep):
            _compat.tf_variable(kernel.variable).assign(kernel.variable * keep)
            kernel.multiply_masks(tf.convert_to_tensor(keep))

    def before_step(self, step):
        """Remembers which weights are pruned (the first time: after `BackupAndRestore` restored the model)."""
        if self._step is None:
            self._step = step
        self._remember()

    def after_step(self, step):
        """Zeroes the pruned weights the optimizer moved; prunes more where the schedule's level rose."""
        self._restore()
        for kernel in self._kernels:
            level = kernel.pruning.level(step)
            if level > kernel.pruning.level(self._step) + 1e-9:
                kernel.prune_to(level)
        self._step = step


class UpdatePruning(keras.callbacks.Callback):
    """Keeps a pruned model pruned during `fit`, and its schedule on the optimizer's step.

    For a model pruned by `prune`: after every training batch it zeroes the
    pruned weights again (the optimizer moves them; with
    `steps_per_execution > 1` it runs once per execution) and, when the
    schedule says so, raises the sparsity level. It composes with
    `keras_smart.callbacks.AdversarialCallback` and `MaskUpdate` (new masks are
    intersected with the surviving weights) and with
    `keras.callbacks.BackupAndRestore` (a resumed `fit` continues the schedule
    from the restored optimizer step).

    For a model wrapped by `prune_low_magnitude` (TF-MOT, tf_keras) it is
    TF-MOT's `UpdatePruningStep` counting optimizer steps: before every batch
    the wrappers' `pruning_step` and schedules are set from the optimizer's
    step, at each epoch end the wrappers re-apply their masks.

    Example:
      >>> schedule = keras_smart.pruning.PolynomialDecay(end_step=4, frequency=2)
      >>> smart = keras_smart.pruning.prune(smart, 0.5, schedule=schedule)
      >>> smart.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      >>> history = smart.fit(x, y, batch_size=32, epochs=2, verbose=0,
      ...                     callbacks=[keras_smart.pruning.UpdatePruning()])
      >>> keras_smart.pruning.pruning_level(smart)  # after 4 optimizer steps: the schedule's end
      0.5
      >>> {name: round(value, 2) for name, value in keras_smart.pruning.kernel_sparsity(smart).items()}
      {'conv/kernel': 0.5, 'logits/kernel': 0.5}
    """

    def __init__(self):
        super().__init__()
        self._native = None
        self._tfmot = None

    def on_train_begin(self, logs=None):
        pruned = kernels_lib.pruned_kernels(self.model)
        self._native = _NativeUpkeep(pruned) if pruned else None
        self._tfmot = tfmot.StepSync(self.model) if kernels_lib.tfmot_wrappers(self.model) else None
        if self._native is None and self._tfmot is None:
            raise ValueError(
                f"Model '{self.model.name}' is not pruned: call keras_smart.pruning.prune(model, "
                "target_sparsity, schedule=...) (or keras_smart.pruning.prune_low_magnitude for TF-MOT) "
                "before fit."
            )

    def on_train_batch_begin(self, batch, logs=None):
        step = schedule_lib.optimizer_step(self.model)
        if self._native is not None:
            self._native.before_step(step)
        if self._tfmot is not None:
            self._tfmot.before_step(step)

    def on_train_batch_end(self, batch, logs=None):
        if self._native is not None:
            self._native.after_step(schedule_lib.optimizer_step(self.model))

    def on_epoch_end(self, epoch, logs=None):
        if self._tfmot is not None:
            self._tfmot.remask()

    def on_train_end(self, logs=None):
        if self._tfmot is not None:
            self._tfmot.finish(schedule_lib.optimizer_step(self.model))


__all__ = ["UpdatePruning"]
