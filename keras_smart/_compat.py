"""The one place that chooses between Keras 3 and the legacy tf_keras flavour.

TensorFlow selects tf_keras when `TF_USE_LEGACY_KERAS` is truthy before it is
imported; keras_smart follows the same rule, once, at import. Every other module
imports `keras` from here and never imports `keras` or `tf_keras` itself.
"""

import os

IS_LEGACY = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")

if IS_LEGACY:
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    from tf_keras.src.engine.functional import Functional  # pylint: disable=g-import-not-at-top
else:
    import keras  # pylint: disable=g-import-not-at-top
    from keras.src.models.functional import Functional  # pylint: disable=g-import-not-at-top

FLAVOUR = "tf_keras" if IS_LEGACY else "keras3"

# The attribute (and weight name) of DepthwiseConv2D's kernel differs between the flavours.
DEPTHWISE_KERNEL = "depthwise_kernel" if IS_LEGACY else "kernel"

__all__ = [
    "DEPTHWISE_KERNEL",
    "FLAVOUR",
    "Functional",
    "IS_LEGACY",
    "custom_object_scope",
    "flatten_layers",
    "is_functional",
    "is_sequential",
    "keras",
    "register_serializable",
    "weight_name",
]


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
