"""The TF-MOT bridge (tf_keras only): TF-MOT's pruning wrappers around a SmartModel, counting optimizer steps.

TF-MOT's `PruneLowMagnitude` wrapper advances its `pruning_step` on every
training-mode call, and reads its schedule at that count. A SmartModel's
adversarial train step calls the model several times per optimizer step (the
clean group, then each attacked group clean and adversarial), so the count
would run ahead of the optimizer. `prune_low_magnitude` therefore hands TF-MOT
the schedule wrapped so that it reads the optimizer's step instead, which
`UpdatePruning` writes before every batch (it also sets every wrapper's
`pruning_step` to the optimizer's step). TF-MOT is imported only inside these
functions: Keras 3 processes never import it.
"""

import functools
import inspect

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import training
from keras_smart.layers import conditional_kernel as ck
from keras_smart.pruning import kernels as kernels_lib

keras = _compat.keras

_MISSING_CALLBACK = (
    "The schedules of keras_smart.pruning.prune_low_magnitude count optimizer steps: pass "
    "keras_smart.pruning.UpdatePruning() to fit (in place of tfmot.sparsity.keras.UpdatePruningStep())."
)


def import_tfmot(caller):
    """The `tensorflow_model_optimization` module; raises, saying what to do, where it cannot be used."""
    if not _compat.IS_LEGACY:
        raise RuntimeError(
            f"`{caller}` bridges to TF-MOT, which accepts only tf_keras models, and this process runs "
            "Keras 3. Either set TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported (and install "
            "tf-keras), or use keras_smart.pruning.prune (native gradual pruning, both flavours)."
        )
    try:
        import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise ImportError(
            f"`{caller}` needs TF-MOT: pip install 'keras_smart[tfmot]' (tensorflow-model-optimization)."
        ) from e
    return tfmot


@functools.cache
def optimizer_step_schedule_class():
    """`OptimizerStepSchedule`, a TF-MOT `PruningSchedule` (defined on first use, when TF-MOT is imported)."""
    tfmot = import_tfmot("prune_low_magnitude")

    @_compat.register_serializable
    class OptimizerStepSchedule(tfmot.sparsity.keras.PruningSchedule):
        """A TF-MOT schedule read at the optimizer's step + 1 (TF-MOT's count with one call per step).

        `step` holds it; `UpdatePruning` writes it before every batch.
        """

        def __init__(self, schedule):
            if isinstance(schedule, dict):
                schedule = keras.utils.deserialize_keras_object(schedule, module_objects=vars(tfmot.sparsity.keras))
            self.schedule = schedule
            self.step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="optimizer_step")

        def __call__(self, step):
            del step  # TF-MOT's count of training-mode calls, several per optimizer step in adversarial training
            synced = tf.debugging.assert_non_negative(self.step, message=_MISSING_CALLBACK)
            with tf.control_dependencies([synced]):
                return self.schedule(tf.identity(self.step))

        def get_config(self):
            return {"class_name": "keras_smart>OptimizerStepSchedule", "config": {"schedule": self.schedule.get_config()}}

    return OptimizerStepSchedule


class StepSync:
    """What `UpdatePruning` does for TF-MOT's wrappers in a model: they count optimizer steps.

    Before each batch every wrapper's `pruning_step` and every
    `OptimizerStepSchedule`'s step are set from the optimizer's step; at each
    epoch end the wrappers re-apply their masks (so saved weights are sparse),
    as TF-MOT's `UpdatePruningStep` does.
    """

    def __init__(self, model):
        self._wrappers = kernels_lib.tfmot_wrappers(model)
        schedules = {id(w.pruning_schedule): w.pruning_schedule for w in self._wrappers}
        schedule_class = optimizer_step_schedule_class()
        self._schedule_steps = [s.step for s in schedules.values() if isinstance(s, schedule_class)]

    def before_step(self, step):
        """Step `step + 1` starts: the count TF-MOT's wrappers reach with one training call per step."""
        for wrapper in self._wrappers:
            wrapper.pruning_step.assign(step)
        for schedule_step in self._schedule_steps:
            schedule_step.assign(step + 1)

    def remask(self):
        for wrapper in self._wrappers:
            wrapper.pruning_obj.weight_mask_op()

    def finish(self, step):
        """Training ends after optimizer step `step`: the weights masked, the wrappers' counters at `step`."""
        self.remask()
        for wrapper in self._wrappers:
            wrapper.pruning_step.assign(step)


def _as_smart_model(result, source):
    """`result` as a SmartModel with `source`'s trade-off, every conditional layer bound to it."""
    if not isinstance(result, training.SmartModel):
        result = training.SmartModel(inputs=result.inputs, outputs=result.outputs, name=result.name)
    result.tradeoff_variable.assign(source.tradeoff_variable)  # TF-MOT's clone starts at lam = 0
    result.bind_layers()
    return result


def _masked_kernels(model):
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, ck.ConditionalKernel) and layer.mask_kind:
            for name in layer.kernel_names:
                yield layer, name


def _check_tfmot_can_wrap(model):
    """Raises, naming the layers and the ways forward, if TF-MOT has no pruning rule for some layer."""
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry  # pylint: disable=g-import-not-at-top

    refused = [
        f"{l.name} ({type(l).__name__})"
        for l in model.layers
        if not isinstance(l, (keras.Model, keras.layers.InputLayer))
        and not hasattr(l, "get_prunable_weights")
        and not prune_registry.PruneRegistry.supports(l)
    ]
    if refused:
        raise ValueError(
            f"TF-MOT cannot prune these layers of model '{model.name}': {refused} (its registry has no "
            "rule for them; plain EinsumDense is one). Ways forward: keras_smart.pruning.prune(model, "
            "target_sparsity) prunes every kernel natively, in both flavours; or convert with "
            "method='smart', 'float' or 'floats', whose conditional layers TF-MOT can wrap."
        )


def prune_low_magnitude(model, **tfmot_options):
    """TF-MOT's `prune_low_magnitude` for a SmartModel (tf_keras flavour): returns a SmartModel.

    TF-MOT wraps each conditional layer and prunes the kernels it reports
    (`get_prunable_weights`), by magnitude, per its schedule. Before wrapping
    ends, weights that no path uses (outside the union of SMART's masks /
    FLOATS' mask) are set to zero, so TF-MOT's ranking prunes them first. The
    result keeps the model's trade-off and trains adversarially: pass
    `AdversarialCallback` and `keras_smart.pruning.UpdatePruning()` to `fit`.
    The schedule counts optimizer steps (see `keras_smart.pruning.tfmot`), so
    `end_step` is the optimizer step at which the target is reached.
    `strip_pruning` removes the wrappers and folds the pruning into the path masks.

    Args:
      model: a SmartModel (or any tf_keras model TF-MOT accepts; non-Smart
        models are passed through to TF-MOT as they are).
      **tfmot_options: `tfmot.sparsity.keras.prune_low_magnitude`'s arguments
        (pruning_schedule, block_size, block_pooling_type, ...).

    Returns:
      The wrapped model; a SmartModel when `model` is one.

    Raises:
      RuntimeError: the process runs Keras 3 (TF-MOT needs TF_USE_LEGACY_KERAS=1).
      ImportError: TF-MOT is not installed.
      ValueError: a model pruned by `keras_smart.pruning.prune`, or a layer TF-MOT cannot wrap.

    Example:
      >>> if keras_smart.KERAS_FLAVOUR == "tf_keras":  # TF-MOT accepts tf_keras models only
      ...     import tensorflow_model_optimization as tfmot
      ...     schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=4, frequency=1)
      ...     pruned = keras_smart.pruning.prune_low_magnitude(smart, pruning_schedule=schedule)
      ...     pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      ...     history = pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[
      ...         keras_smart.pruning.UpdatePruning()])  # and AdversarialCallback(...) to train adversarially
      ...     smart = keras_smart.pruning.strip_pruning(pruned)
    """
    tfmot = import_tfmot("prune_low_magnitude")
    if kernels_lib.pruned_kernels(model):
        raise ValueError(
            f"Model '{model.name}' is already pruned by keras_smart.pruning.prune; call strip_pruning(model) "
            "first, or keep the native pruning."
        )
    _check_tfmot_can_wrap(model)
    if not isinstance(model, training.SmartModel):
        return tfmot.sparsity.keras.prune_low_magnitude(model, **tfmot_options)
    default = inspect.signature(tfmot.sparsity.keras.prune_low_magnitude).parameters["pruning_schedule"].default
    schedule = optimizer_step_schedule_class()(tfmot_options.pop("pruning_schedule", default))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule, **tfmot_options)
    pruned = _as_smart_model(pruned, model)
    for layer, name in _masked_kernels(pruned):
        kernel = getattr(layer, name)
        used = np.any([m > 0 for m in layer.kernel_masks(name).values()], axis=0)
        kernel.assign(np.asarray(kernel.numpy()) * used)
    return pruned


def strip_wrappers(model):
    """TF-MOT's `strip_pruning`; a SmartModel stays one, its path masks inside the surviving weights."""
    tfmot = import_tfmot("strip_pruning")
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    if not isinstance(model, training.SmartModel):
        return stripped
    stripped = _as_smart_model(stripped, model)
    for layer, name in _masked_kernels(stripped):
        nonzero = (np.asarray(getattr(layer, name).numpy()) != 0).astype("float32")
        for mask_name in layer.mask_names(name):
            layer.assign_mask(mask_name, layer.mask_value(mask_name) * nonzero)
    return stripped


__all__ = ["StepSync", "import_tfmot", "optimizer_step_schedule_class", "prune_low_magnitude", "strip_wrappers"]
