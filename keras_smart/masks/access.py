"""Reading and writing the masks of a SmartModel's masked layers, by layer and mask name."""

import collections.abc

import numpy as np

from keras_smart import _compat
from keras_smart import registry
from keras_smart.layers import conditional_kernel as ck

keras = _compat.keras


def masked_layers(model, caller):
    """{layer name: layer} of the layers of `model` (nested models opened) that carry masks.

    Raises:
      TypeError: `model` is not a keras.Model.
      ValueError: no masked layer, or two masked layers share a name.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{caller}` expects a SmartModel. Received: {type(model).__name__}")
    layers = [
        l for l in _compat.flatten_layers(model) if isinstance(l, ck.ConditionalKernel) and l.mask_kind
    ]
    if not layers:
        raise ValueError(
            f"`{caller}` needs a model converted with method='smart' or method='floats'; "
            f"model '{model.name}' has no masked layers."
        )
    names = [l.name for l in layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Masked layers must have unique names across nested models; repeated: {duplicates}."
        )
    return {l.name: l for l in layers}


def mask_shapes(layer):
    """{mask weight name: full shape (its kernel's)} of every kernel of a masked layer."""
    return {n: layer.mask_shape(n) for k in registry.kernel_names(layer) for n in layer.mask_names(k)}


def get_masks(model):
    """The model's masks: {layer name: {mask weight name: 0/1 NumPy array}}.

    Example:
      >>> masks = keras_smart.get_masks(smart)
      >>> sorted(masks["conv"]), masks["conv"]["kernel_clean_mask"].shape
      (['kernel_adv_mask', 'kernel_clean_mask'], (3, 3, 1, 8))
      >>> float(masks["conv"]["kernel_clean_mask"].mean())  # the clean path's density: all ones after convert
      1.0
    """
    masks = {}
    for name, layer in masked_layers(model, "get_masks").items():
        masks[name] = {}
        for kernel_name in registry.kernel_names(layer):
            masks[name].update(layer.kernel_masks(kernel_name))
    return masks


def set_masks(model, masks):
    """Assigns masks to a SmartModel's masked layers; checks everything before changing anything.

    Args:
      model: a SmartModel converted with method "smart" or "floats".
      masks: {layer name: {mask weight name: array of 0/1}}; mask weight names are
        "<kernel>_clean_mask" / "<kernel>_adv_mask" (smart) or "<kernel>_mask"
        (floats), e.g. "kernel_clean_mask". Layers and masks left out keep theirs.

    Raises:
      TypeError: `masks` is not a mapping of mappings.
      ValueError: unknown layer or mask name, wrong shape, or values other than 0 and 1.

    Example:
      >>> keras_smart.set_masks(smart, {"logits": {"kernel_adv_mask": np.ones((8, 10))}})
      >>> int(keras_smart.get_masks(smart)["logits"]["kernel_adv_mask"].sum())
      80
    """
    layers = masked_layers(model, "set_masks")
    if not isinstance(masks, collections.abc.Mapping):
        raise TypeError(
            "`masks` must map layer names to {mask name: array}. "
            f"Received: {type(masks).__name__}"
        )
    checked = [
        assignment
        for layer_name, layer_masks in masks.items()
        for assignment in _checked_layer_masks(layers, layer_name, layer_masks)
    ]
    for layer_name, mask_name, value in checked:
        layers[layer_name].assign_mask(mask_name, value)


def _checked_layer_masks(layers, layer_name, layer_masks):
    """[(layer name, mask name, float32 0/1 array)] for one layer's entry of `set_masks`, every value checked."""
    if layer_name not in layers:
        raise ValueError(f"No masked layer named {layer_name!r}. Masked layers: {sorted(layers)}")
    if not isinstance(layer_masks, collections.abc.Mapping):
        raise TypeError(
            f"`masks[{layer_name!r}]` must map mask names to arrays. "
            f"Received: {type(layer_masks).__name__}"
        )
    shapes = mask_shapes(layers[layer_name])
    checked = []
    for mask_name, value in layer_masks.items():
        if mask_name not in shapes:
            raise ValueError(
                f"Layer {layer_name!r} has no mask {mask_name!r}. Its masks: {sorted(shapes)}"
            )
        value = np.asarray(value)
        expected = shapes[mask_name]
        if value.shape != expected:
            raise ValueError(
                f"Mask {layer_name!r}/{mask_name!r} must have shape {expected}. "
                f"Received: shape {value.shape}"
            )
        if not np.isin(value, (0, 1)).all():
            raise ValueError(
                f"Mask {layer_name!r}/{mask_name!r} must contain only 0 and 1. "
                f"Received values such as {np.unique(value)[:5].tolist()}"
            )
        checked.append((layer_name, mask_name, value.astype("float32")))
    return checked
