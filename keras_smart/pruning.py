"""Magnitude pruning that composes with conditional layers: native gradual pruning and a TF-MOT bridge.

A pruned weight is zero on every path. Per kernel, the pruning machinery keeps
one binary *pruning mask* P (the weights still alive) and maintains:

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

Two ways to prune:
- `prune(model, target_sparsity, schedule=...)` (both Keras flavours; the only
  way on Keras 3, which TF-MOT does not accept): prunes in place, one shot or
  gradually with a `PolynomialDecay` schedule (TF-MOT's formula) driven by the
  `UpdatePruning` callback in `fit`.
- `prune_low_magnitude(model, **tfmot_options)` / `strip_pruning(model)`
  (tf_keras only): TF-MOT's wrappers around the conditional layers' kernels
  (their `get_prunable_weights`), returning a SmartModel that still trains
  adversarially; TF-MOT is imported only inside these functions.

Pruning-preserving quantization-aware training (`quantize_aware`, tf_keras
only) runs TF-MOT's `Default8BitPrunePreserveQuantizeScheme` on the model
folded at one trade-off (see its docstring for why not on the SmartModel).
"""

import dataclasses
import numbers
import weakref

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import registry
from keras_smart import training
from keras_smart.layers import conditional_kernel as ck

keras = _compat.keras

_TFMOT_PRUNE_WRAPPER = "PruneLowMagnitude"


# --- schedule --------------------------------------------------------------------------------------


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _check_sparsity(value, name, allow_zero=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
    value = float(value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value < 1.0):
        bounds = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(
            f"`{name}` must be in {bounds} (the share of kernel weights set to zero). "
            f"Received: {name}={value}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class PolynomialDecay:
    """Gradual pruning schedule (Zhu & Gupta; TF-MOT's `PolynomialDecay`), towards `prune`'s target.

    At optimizer step t the sparsity level is
    `target + (initial_sparsity - target) * (1 - p) ** power`, with
    `p = clip((t - begin_step) / (end_step - begin_step), 0, 1)`; masks are
    updated every `frequency` steps from `begin_step`, and at `end_step`.

    Attributes:
      begin_step: the first step that prunes (steps count optimizer updates).
      end_step: the step at which the target is reached.
      initial_sparsity: the level at `begin_step`.
      power: the decay exponent (3, as in TF-MOT).
      frequency: steps between mask updates.

    Example:
      >>> schedule = keras_smart.pruning.PolynomialDecay(begin_step=0, end_step=500, frequency=50)
      >>> keras_smart.pruning.prune(smart, 0.8, schedule=schedule)
    """

    begin_step: int = 0
    end_step: int = 1000
    initial_sparsity: float = 0.0
    power: float = 3.0
    frequency: int = 100

    def __post_init__(self):
        _check_int(self.begin_step, "begin_step", 0)
        _check_int(self.end_step, "end_step", self.begin_step + 1)
        _check_sparsity(self.initial_sparsity, "initial_sparsity")
        _check_int(self.frequency, "frequency", 1)
        if isinstance(self.power, bool) or not isinstance(self.power, numbers.Real) or not self.power > 0:
            raise ValueError(f"`power` must be a number > 0. Received: power={self.power!r}")

    def sparsity(self, step, target):
        """The level at optimizer step `step` for final level `target`."""
        if step < self.begin_step:
            return 0.0
        progress = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        return target + (self.initial_sparsity - target) * (1.0 - progress) ** self.power

    def due(self, step):
        """Whether masks are updated after optimizer step `step`."""
        if step < self.begin_step:
            return False
        return step >= self.end_step or (step - self.begin_step) % self.frequency == 0


# --- what is pruned --------------------------------------------------------------------------------


class _Kernel:
    """One prunable kernel: its layer, its variable, the path masks over it, its pruning mask."""

    def __init__(self, layer, kernel_name):
        self.layer = layer
        self.kernel_name = kernel_name
        self.variable = getattr(layer, kernel_name)
        names = layer.mask_names(kernel_name) if isinstance(layer, ck.ConditionalKernel) else ()
        self.masks = [getattr(layer, n) for n in names]
        # Alive = used by some path and not already zero (a model pruned before keeps its zeros).
        self.keep = tf.Variable(
            self.used().astype("float32"), trainable=False, name=f"{layer.name}_{kernel_name}_keep"
        )

    @property
    def name(self):
        return f"{self.layer.name}/{self.kernel_name}"

    def used(self):
        """Weights that some path computes with (non-zero and inside the union of the masks)."""
        used = np.asarray(self.variable.numpy()) != 0
        if self.masks:
            used &= np.any([np.asarray(m.numpy()) > 0 for m in self.masks], axis=0)
        return used

    def update(self, level):
        """Shrinks the pruning mask to the top (1 - level) share of |W| among the weights still alive."""
        kernel = np.abs(np.asarray(self.variable.numpy()))
        alive = (np.asarray(self.keep.numpy()) > 0) & self.used()
        keep = min(int(round((1.0 - level) * kernel.size)), int(alive.sum()))
        scores = np.where(alive, kernel, -1.0).ravel()
        order = np.argsort(-scores, kind="stable")
        mask = np.zeros(kernel.size, np.float32)
        mask[order[:keep]] = 1.0
        self.keep.assign(mask.reshape(kernel.shape))


def _prunable_kernels(model, layer_names):
    layers = [l for l in _compat.flatten_layers(model) if registry.kernel_names(l)]
    wrapped = [l.name for l in _compat.flatten_layers(model) if type(l).__name__ == _TFMOT_PRUNE_WRAPPER]
    if wrapped:
        raise ValueError(
            f"Model '{model.name}' is wrapped for TF-MOT pruning ({wrapped[:3]}...). Use one pruning "
            "mechanism: keras_smart.pruning.strip_pruning(model) first, or keep TF-MOT's."
        )
    if layer_names is not None:
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        layer_names = list(layer_names)
        known = {l.name for l in layers}
        unknown = sorted(set(layer_names) - known)
        if unknown:
            raise ValueError(f"No prunable layer named {unknown}. Prunable layers: {sorted(known)}")
        layers = [l for l in layers if l.name in layer_names]
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no prunable layers (layers with kernels: convolutions, Dense, "
            "EinsumDense, or their conditional versions)."
        )
    for layer in layers:
        if not layer.built:
            raise ValueError(f"Layer '{layer.name}' is not built: call the model on an input first.")
    return [_Kernel(layer, name) for layer in layers for name in registry.kernel_names(layer)]


# --- native pruning --------------------------------------------------------------------------------

_STATES = weakref.WeakKeyDictionary()  # model -> _Pruning (kept outside the model: Keras must not track it)


class _Pruning:
    """A model's native pruning state: its kernels, target, schedule and current level."""

    def __init__(self, kernels, target, schedule):
        self.kernels = kernels
        self.target = target
        self.schedule = schedule
        self.level = 0.0
        self.updates = []  # (step, level) of every mask update
        self._apply = tf.function(self._apply_eagerly)

    def _apply_eagerly(self):
        for kernel in self.kernels:
            keep = tf.cast(kernel.keep, kernel.variable.dtype)
            _compat.tf_variable(kernel.variable).assign(kernel.variable * keep)
            for mask in kernel.masks:
                _compat.tf_variable(mask).assign(mask * keep)

    def apply(self):
        """Zeroes every pruned weight of the kernels and of their path masks."""
        self._apply()

    def update(self, level, step):
        for kernel in self.kernels:
            kernel.update(level)
        self.level = level
        self.updates.append((int(step), float(level)))
        self.apply()

    def on_step(self, step):
        """Updates the masks if the schedule says so after optimizer step `step`; then re-zeroes."""
        if self.schedule is not None and self.schedule.due(step):
            level = self.schedule.sparsity(step, self.target)
            if level > self.level + 1e-9:
                self.update(level, step)
                return
        self.apply()


def _optimizer_step(model):
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    if iterations is None:
        return 0
    return int(np.asarray(iterations.numpy() if hasattr(iterations, "numpy") else iterations))


def prune(model, target_sparsity, *, schedule=None, layers=None):
    """Prunes a model's kernels by magnitude, in place, so that a pruned weight is zero on every path.

    With `schedule=None` the kernels are pruned to `target_sparsity` now (one
    shot); pass `UpdatePruning()` to `fit` to keep them pruned while
    fine-tuning. With a `PolynomialDecay` schedule the level grows during `fit`
    (the `UpdatePruning` callback updates the masks after the scheduled
    optimizer steps) and reaches `target_sparsity` at `schedule.end_step`.

    Works on SmartModels of every method and on plain Keras models, in both
    Keras flavours. See the module docstring for how the pruning mask composes
    with SMART's and FLOATS' path masks.

    Args:
      model: a built Keras model (SmartModel or plain).
      target_sparsity: the final share of each kernel's weights set to zero, in (0, 1).
      schedule: None (one shot) or a `PolynomialDecay`.
      layers: None (every layer with a kernel, see
        `keras_smart.registry.kernel_names`: convolutions, Dense, EinsumDense,
        conditional or plain, nested models included) or the names of the
        layers to prune.

    Returns:
      `model` itself, pruned (to the schedule's level at the optimizer's
      current step), and registered for `UpdatePruning` and `strip_pruning`.

    Raises:
      TypeError: `model` is not a Keras model, or bad argument types.
      ValueError: a sparsity outside (0, 1), an unknown layer name, a model
        without prunable layers, or a model wrapped by TF-MOT.

    Example:
      >>> keras_smart.pruning.prune(smart, 0.75, schedule=keras_smart.pruning.PolynomialDecay(
      ...     begin_step=0, end_step=400, frequency=40))
      >>> smart.fit(x, y, epochs=4, callbacks=[keras_smart.callbacks.AdversarialCallback(attack),
      ...                                      keras_smart.pruning.UpdatePruning()])
      >>> keras_smart.pruning.strip_pruning(smart)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`prune` expects a Keras model. Received: {type(model).__name__}")
    target = _check_sparsity(target_sparsity, "target_sparsity", allow_zero=False)
    if schedule is not None and not isinstance(schedule, PolynomialDecay):
        raise TypeError(
            "`schedule` must be None (one shot) or a keras_smart.pruning.PolynomialDecay. "
            f"Received: {type(schedule).__name__}"
        )
    if schedule is not None and schedule.initial_sparsity > target:
        raise ValueError(
            f"`schedule.initial_sparsity` ({schedule.initial_sparsity}) must not exceed "
            f"target_sparsity ({target})."
        )
    state = _Pruning(_prunable_kernels(model, layers), target, schedule)
    step = _optimizer_step(model)
    level = target if schedule is None else schedule.sparsity(step, target)
    if level > 0:
        state.update(level, step)
    else:
        state.apply()  # weights no path uses are zero from the start
    _STATES[model] = state
    return model


def pruning_level(model):
    """The sparsity level the native pruning of `model` has reached (None if it is not pruned by `prune`)."""
    state = _STATES.get(model)
    return None if state is None else state.level


class UpdatePruning(keras.callbacks.Callback):
    """Keeps a model pruned by `prune` pruned during `fit`, and follows its schedule.

    After every training batch it re-zeroes the pruned weights (the optimizer
    may move them; with `steps_per_execution > 1` it runs once per execution)
    and, when the schedule says so, raises the sparsity level. It composes with
    `keras_smart.callbacks.AdversarialCallback` and `MaskUpdate` (new masks are
    intersected with the pruning mask).

    Example:
      >>> keras_smart.pruning.prune(model, 0.5, schedule=keras_smart.pruning.PolynomialDecay(end_step=200))
      >>> model.fit(x, y, epochs=2, callbacks=[keras_smart.pruning.UpdatePruning()])
    """

    def _state(self):
        state = _STATES.get(self.model)
        if state is None:
            raise ValueError(
                f"Model '{self.model.name}' is not pruned by keras_smart.pruning.prune: call "
                "prune(model, target_sparsity, schedule=...) before fit. (For a model wrapped by TF-MOT "
                "use tfmot.sparsity.keras.UpdatePruningStep() instead.)"
            )
        return state

    def on_train_begin(self, logs=None):
        self._state().apply()

    def on_train_batch_end(self, batch, logs=None):
        self._state().on_step(_optimizer_step(self.model))

    def on_train_end(self, logs=None):
        self._state().apply()


def kernel_sparsity(model):
    """{"layer/kernel": share of the kernel's positions that are zero on every path}.

    Covers every kernel `keras_smart.registry.kernel_names` knows, conditional
    or plain (noise at its expectation).

    Example:
      >>> keras_smart.pruning.kernel_sparsity(smart)["conv1/kernel"]
      0.75
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`kernel_sparsity` expects a Keras model. Received: {type(model).__name__}")
    result = {}
    for layer in _compat.flatten_layers(model):
        if type(layer).__name__ == _TFMOT_PRUNE_WRAPPER:
            continue
        for name in registry.kernel_names(layer):
            kernel = np.asarray(getattr(layer, name).numpy())
            used = kernel != 0
            if isinstance(layer, ck.ConditionalKernel) and layer.mask_kind:
                used &= np.any([m > 0 for m in layer.kernel_masks(name).values()], axis=0)
            result[f"{layer.name}/{name}"] = float(1.0 - used.mean())
    return result


# --- TF-MOT bridge (tf_keras only) -----------------------------------------------------------------


def _tfmot(caller):
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
    result keeps the model's trade-off and trains adversarially
    (`AdversarialCallback` together with `tfmot.sparsity.keras.UpdatePruningStep()`).
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

    Example:
      >>> import tensorflow_model_optimization as tfmot
      >>> pruned = keras_smart.pruning.prune_low_magnitude(
      ...     smart, pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, 0, 500))
      >>> pruned.compile(...); pruned.fit(x, y, callbacks=[
      ...     keras_smart.callbacks.AdversarialCallback(attack), tfmot.sparsity.keras.UpdatePruningStep()])
      >>> smart = keras_smart.pruning.strip_pruning(pruned)
    """
    tfmot = _tfmot("prune_low_magnitude")
    if model in _STATES:
        raise ValueError(
            f"Model '{model.name}' is already pruned by keras_smart.pruning.prune; call strip_pruning(model) "
            "first, or keep the native pruning."
        )
    _check_tfmot_can_wrap(model)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, **tfmot_options)
    if not isinstance(model, training.SmartModel):
        return pruned
    pruned = _as_smart_model(pruned, model)
    for layer, name in _masked_kernels(pruned):
        kernel = getattr(layer, name)
        used = np.any([m > 0 for m in layer.kernel_masks(name).values()], axis=0)
        kernel.assign(np.asarray(kernel.numpy()) * used)
    return pruned


def strip_pruning(model):
    """Finishes pruning: the model without pruning machinery, its pruned weights zero on every path.

    - A model wrapped by TF-MOT (via `prune_low_magnitude`, tf_keras): TF-MOT's
      `strip_pruning`, then, for a SmartModel, the result is a SmartModel with
      the same trade-off whose path masks are intersected with the kernels'
      non-zeros (so `count_nonzero` and the masks agree).
    - A model pruned by `prune`: the pruned weights are zeroed a last time and
      the model is no longer registered for `UpdatePruning`; `model` is returned.
    - Any other model is returned as it is.

    Example:
      >>> smart = keras_smart.pruning.strip_pruning(pruned)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`strip_pruning` expects a Keras model. Received: {type(model).__name__}")
    wrapped = any(type(l).__name__ == _TFMOT_PRUNE_WRAPPER for l in _compat.flatten_layers(model))
    if wrapped:
        tfmot = _tfmot("strip_pruning")
        stripped = tfmot.sparsity.keras.strip_pruning(model)
        if not isinstance(model, training.SmartModel):
            return stripped
        stripped = _as_smart_model(stripped, model)
        for layer, name in _masked_kernels(stripped):
            nonzero = (np.asarray(getattr(layer, name).numpy()) != 0).astype("float32")
            for mask_name in layer.mask_names(name):
                mask = getattr(layer, mask_name)
                mask.assign(np.asarray(mask.numpy()) * nonzero)
        return stripped
    state = _STATES.pop(model, None)
    if state is not None:
        state.apply()
    return model


def quantize_aware(model, *, tradeoff=None, preserve_sparsity=True):
    """TF-MOT quantization-aware training for one trade-off of a (pruned) model (tf_keras flavour).

    TF-MOT's quantizers fake-quantize a layer's stored kernel, and its registry
    knows only Keras' own layer classes; a conditional layer multiplies masks
    and noise into its kernel after that point, so the quantized tensor would
    not be the one the convolution uses, and `strip` could not fold the
    wrapped layers. QAT is therefore applied where TF-MOT supports it: to the
    plain model that `keras_smart.strip(model, tradeoff)` folds at one
    trade-off. With `preserve_sparsity` it uses TF-MOT's
    `Default8BitPrunePreserveQuantizeScheme`, so the pruned (and masked-out)
    weights stay zero while fine-tuning. Export the result with
    `keras_smart.export.to_tflite(qat_model, path, quantize="int8")` (no
    representative data needed: the ranges are learned).

    Args:
      model: a SmartModel (folded at `tradeoff` first) or a plain tf_keras model.
      tradeoff: the lam to fold a SmartModel at (None: its current trade-off);
        must be None for a plain model.
      preserve_sparsity: keep zero weights at zero during QAT (default True).

    Returns:
      A plain quantization-aware tf_keras model (TF-MOT `QuantizeWrapperV2` layers),
      to compile and fine-tune with `fit`.

    Raises:
      RuntimeError: the process runs Keras 3 (TF-MOT needs TF_USE_LEGACY_KERAS=1).
      ImportError: TF-MOT is not installed.
      ValueError: a trade-off for a plain model, or a model still wrapped for pruning.

    Example:
      >>> qat = keras_smart.pruning.quantize_aware(smart, tradeoff=1.0)
      >>> qat.compile("adam", loss); qat.fit(x, y, epochs=1)
      >>> keras_smart.export.to_tflite(qat, "robust_int8.tflite", quantize="int8")
    """
    tfmot = _tfmot("quantize_aware")
    from keras_smart import config as config_lib  # pylint: disable=g-import-not-at-top
    from keras_smart.convert import strip  # pylint: disable=g-import-not-at-top

    if not isinstance(model, keras.Model):
        raise TypeError(f"`quantize_aware` expects a Keras model. Received: {type(model).__name__}")
    if any(type(l).__name__ == _TFMOT_PRUNE_WRAPPER for l in _compat.flatten_layers(model)):
        raise ValueError(
            f"Model '{model.name}' is still wrapped for TF-MOT pruning: call strip_pruning(model) first."
        )
    if isinstance(model, training.SmartModel):
        tradeoff = None if tradeoff is None else config_lib.check_tradeoff(tradeoff, "tradeoff")
        model = strip(model, tradeoff=tradeoff)
    elif tradeoff is not None:
        raise ValueError(
            f"Model '{model.name}' is a plain Keras model: it has no trade-off. "
            f"Received: tradeoff={tradeoff!r}"
        )
    strip_pruning(model)  # a natively pruned model: final zeros, no longer registered
    quantization = tfmot.quantization.keras
    scheme = (
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        if preserve_sparsity
        else quantization.default_8bit.Default8BitQuantizeScheme()
    )
    return quantization.quantize_apply(quantization.quantize_annotate_model(model), scheme)


__all__ = [
    "PolynomialDecay",
    "UpdatePruning",
    "kernel_sparsity",
    "prune",
    "prune_low_magnitude",
    "pruning_level",
    "quantize_aware",
    "strip_pruning",
]
