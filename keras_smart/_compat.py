"""The one place that chooses between Keras 3 and the legacy tf_keras flavour.

TensorFlow selects tf_keras when `TF_USE_LEGACY_KERAS` is truthy before it is
imported; keras_smart follows the same rule, once, at import. Every other module
imports `keras` from here and never imports `keras` or `tf_keras` itself.
"""

import os

import tensorflow as tf

IS_LEGACY = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")

if IS_LEGACY:
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    from tf_keras.src.engine.functional import Functional  # pylint: disable=g-import-not-at-top
else:
    import keras  # pylint: disable=g-import-not-at-top
    from keras.src.models.functional import Functional  # pylint: disable=g-import-not-at-top

FLAVOUR = "tf_keras" if IS_LEGACY else "keras3"

# add_weight's keyword that keeps a float32 weight float32 under mixed precision.
NO_AUTOCAST = {"experimental_autocast": False} if IS_LEGACY else {"autocast": False}

# The attribute (and weight name) of DepthwiseConv2D's kernel differs between the flavours.
DEPTHWISE_KERNEL = "depthwise_kernel" if IS_LEGACY else "kernel"

__all__ = [
    "DEPTHWISE_KERNEL",
    "NO_AUTOCAST",
    "FLAVOUR",
    "Functional",
    "IS_LEGACY",
    "apply_gradients",
    "custom_object_scope",
    "flatten_layers",
    "is_functional",
    "is_sequential",
    "keras",
    "register_serializable",
    "scale_loss",
    "tf_variable",
    "training_loss",
    "weight_name",
]


def training_loss(model, x, y, y_pred, sample_weight, batch_size, extra_loss=None):
    """The compiled loss plus regularization (plus `extra_loss`), recorded in the "loss" log, as `fit` would.

    `extra_loss` is a scalar added to the total (e.g. TRADES' KL term), scaled
    for distribution like the compiled loss, and counted in the logged loss.
    """
    if IS_LEGACY:
        if extra_loss is None:
            return model.compute_loss(x, y, y_pred, sample_weight)
        # What compute_loss does, with the extra term counted (and logged) like a regularization loss.
        regularization = list(model.losses) + [extra_loss]
        return model.compiled_loss(y, y_pred, sample_weight, regularization_losses=regularization)
    from keras.src.losses import loss as loss_module  # pylint: disable=g-import-not-at-top

    loss = model._compute_loss(  # pylint: disable=protected-access
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
    )
    if extra_loss is not None:
        loss = loss + loss_module.scale_loss_for_distribution(tf.cast(extra_loss, loss.dtype))
    model._loss_tracker.update_state(  # pylint: disable=protected-access
        loss_module.unscale_loss_for_distribution(loss), sample_weight=batch_size
    )
    return loss


def scale_loss(model, loss):
    """Keras 3 scales the loss for mixed precision and distribution inside the tape."""
    return loss if IS_LEGACY else model.optimizer.scale_loss(loss)


def apply_gradients(model, tape, loss):
    """One optimizer step on the model's trainable weights (tf_keras's minimize scales itself)."""
    if IS_LEGACY:
        model.optimizer.minimize(loss, model.trainable_variables, tape=tape)
        return
    weights = model.trainable_weights
    model.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))


def register_serializable(cls):
    """Registers `cls` under package "keras_smart" so `.keras` files load it by name."""
    return keras.utils.register_keras_serializable(package="keras_smart")(cls)


def custom_object_scope(objects):
    """A scope in which deserialization resolves the given {name: class} mapping."""
    return keras.utils.custom_object_scope(objects)


def is_sequential(model):
    return isinstance(model, keras.Sequential)


def is_functional(model):
    """True for graph models (Functional and Sequential), False for subclassed ones."""
    return isinstance(model, Functional) or is_sequential(model)


def flatten_layers(model):
    """All layers reachable from `model`, nested models and wrappers included, excluding itself."""
    return list(model._flatten_layers(include_self=False, recursive=True))  # pylint: disable=protected-access


def weight_name(variable):
    """The short name of a layer weight ("kernel"), the same in both flavours.

    Keras 3 names a variable "kernel"; tf_keras names it "dense/kernel:0".
    """
    name = variable.name.split(":")[0]
    return name.rsplit("/", 1)[-1]


def tf_variable(variable):
    """The `tf.Variable` behind a layer weight (Keras 3 wraps it), e.g. for `GradientTape.watch`."""
    return variable if isinstance(variable, tf.Variable) else variable.value
