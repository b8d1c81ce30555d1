"""The IBM Adversarial Robustness Toolbox (ART) adapter: a keras_smart model as an ART classifier."""

import functools
import warnings

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import inputs
from keras_smart import training
from keras_smart import validation
from keras_smart.evaluation import forward as forward_lib
from keras_smart.evaluation import report

keras = _compat.keras


def import_art(module, name):
    """`module.name` from ART, or an ImportError that says how to install it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ART warns that PyTorch is missing
            imported = __import__(module, fromlist=[name])
        return getattr(imported, name)
    except ImportError as e:
        raise ImportError(
            f"This needs IBM's Adversarial Robustness Toolbox ({module}.{name}): {report.EXTRA} "
            "(or pip install adversarial-robustness-toolbox)."
        ) from e


def version():
    """"adversarial-robustness-toolbox <version>", or "not installed"."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ART warns that PyTorch is missing
            import art  # pylint: disable=g-import-not-at-top
    except ImportError:
        return "not installed"
    return f"adversarial-robustness-toolbox {art.__version__}"


@functools.lru_cache(maxsize=None)
def _classifier_class():
    base_class = import_art("art.estimators.classification", "TensorFlowV2Classifier")

    class KerasSmartClassifier(base_class):
        """ART's TensorFlowV2Classifier around a keras_smart model at a fixed trade-off.

        `predict` runs in batches through one `tf.function` (ART's own runs the
        whole array at once and retraces per shape); with `seed`, its random
        ops (weight noise) are seeded (see `forward.compile_fn`).
        """

        def __init__(self, model, *, batch_size=256, seed=None, **kwargs):
            super().__init__(model=model, **kwargs)
            self._predict_batch_size = batch_size
            self._predict_fn = forward_lib.compile_fn(lambda t, training: model(t, training=training), seed=seed)

        def predict(self, x, batch_size=None, training_mode=False, **kwargs):
            del kwargs
            x_preprocessed, _ = self._apply_preprocessing(x, y=None, fit=False)
            size = batch_size or self._predict_batch_size
            outputs = [
                self._predict_fn(tf.constant(x_preprocessed[s : s + size], tf.float32), bool(training_mode)).numpy()
                for s in range(0, len(x_preprocessed), size)
            ]
            predictions = np.concatenate(outputs) if outputs else np.zeros((0, self.nb_classes), np.float32)
            return self._apply_postprocessing(preds=predictions, fit=False)

    return KerasSmartClassifier


def classifier(forward, *, nb_classes, input_shape, clip_values, batch_size, seed=None):
    """The ART classifier of a `forward.Forward` (cross-entropy from logits as its loss)."""
    return _classifier_class()(
        forward,
        nb_classes=nb_classes,
        input_shape=input_shape,
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=tuple(float(c) for c in clip_values),
        batch_size=batch_size,
        seed=seed,
    )


def as_art_classifier(model, tradeoff=None, *, noise="sample", clip_values=(0.0, 1.0), batch_size=256):
    """An IBM ART `TensorFlowV2Classifier` of `model` fixed at one trade-off, for any ART attack.

    The trade-off is fixed inside the classifier (`tradeoff_override`), so a
    later `set_tradeoff` on the model does not move it. Batch-norm runs in
    inference mode; the loss is cross-entropy from logits. Works with both Keras
    flavours.

    Args:
      model: a SmartModel, or a plain Keras classifier (one input; logits out).
      tradeoff: lam in [0, 1] for a SmartModel (None: its current trade-off);
        must be None for a plain model.
      noise: for noisy methods (float, floats, SMART's noise mode): "sample"
        (fresh noise on every call, as trained) or "expected" (noise at its
        mean: what `strip` and export compute).
      clip_values: the valid input range (min, max).
      batch_size: batch size of `predict`.

    Returns:
      An `art.estimators.classification.TensorFlowV2Classifier` (subclass).

    Raises:
      ImportError: ART is not installed (`pip install keras_smart[eval]`).
      TypeError / ValueError: not a Keras model, a trade-off for a plain model,
        a bad trade-off, noise mode or input shape.

    Example:
      >>> classifier = keras_smart.evaluation.as_art_classifier(smart, tradeoff=1.0)
      >>> classifier.nb_classes, classifier.input_shape, classifier.predict(x[:3]).shape
      (10, (28, 28, 1), (3, 10))
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`as_art_classifier` expects a keras.Model. Received: {type(model).__name__}")
    noise = forward_lib.check_noise(noise)
    tradeoff = _fixed_tradeoff(model, tradeoff)
    inputs.check_single_io(model, "`as_art_classifier`")
    shape = forward_lib.declared_input_shape(model)
    if shape is None or any(d is None for d in shape[1:]):
        raise ValueError(f"`as_art_classifier` needs a model with a fully defined input shape. Received: {shape}")
    lo, hi = forward_lib.check_input_range(clip_values, "clip_values")
    batch_size = validation.check_int(batch_size, "batch_size", minimum=1)
    forward = forward_lib.Forward(model, tradeoff=tradeoff, expected_noise=noise == "expected")
    classes = int(forward(tf.zeros((1, *shape[1:]))).shape[-1])
    return classifier(forward, nb_classes=classes, input_shape=tuple(shape[1:]), clip_values=(lo, hi),
                      batch_size=batch_size)


def _fixed_tradeoff(model, tradeoff):
    if isinstance(model, training.SmartModel):
        return float(model.tradeoff_variable.numpy()) if tradeoff is None else validation.check_tradeoff(tradeoff)
    if tradeoff is not None:
        raise ValueError(
            f"Model '{model.name}' is a plain Keras model: it has no trade-off. Pass tradeoff=None (or convert "
            "it with keras_smart.convert first)."
        )
    return None
