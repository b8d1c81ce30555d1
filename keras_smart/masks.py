"""Mask design and non-zero accounting for SMART (two masks per kernel) and FLOATS (one mask)."""

import collections.abc
import dataclasses
import math

import numpy as np

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart.layers import base
from keras_smart.layers import conditional_kernel as ck

keras = _compat.keras

_KERNEL_LAYERS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)


def _kernel_names(layer):
    # SeparableConv2D first: in tf_keras DepthwiseConv2D subclasses Conv2D, so order matters.
    if isinstance(layer, keras.layers.SeparableConv2D):
        return ("depthwise_kernel", "pointwise_kernel")
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return (_compat.DEPTHWISE_KERNEL,)
    return ("kernel",)


def _masked_layers(model, caller):
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


def get_masks(model):
    """The model's masks: {layer name: {mask weight name: 0/1 NumPy array}}.

    Example:
      >>> masks = keras_smart.get_masks(smart)
      >>> masks["conv1"]["kernel_clean_mask"].mean()  # the clean path's density
    """
    masks = {}
    for name, layer in _masked_layers(model, "get_masks").items():
        masks[name] = {}
        for kernel_name in layer.kernel_names:
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
      >>> keras_smart.set_masks(smart, {"fc": {"kernel_adv_mask": np.ones((64, 10))}})
    """
    layers = _masked_layers(model, "set_masks")
    if not isinstance(masks, collections.abc.Mapping):
        raise TypeError(
            "`masks` must map layer names to {mask name: array}. "
            f"Received: {type(masks).__name__}"
        )
    checked = []
    for layer_name, layer_masks in masks.items():
        if layer_name not in layers:
            raise ValueError(
                f"No masked layer named {layer_name!r}. Masked layers: {sorted(layers)}"
            )
        if not isinstance(layer_masks, collections.abc.Mapping):
            raise TypeError(
                f"`masks[{layer_name!r}]` must map mask names to arrays. "
                f"Received: {type(layer_masks).__name__}"
            )
        layer = layers[layer_name]
        variables = {
            n: getattr(layer, n) for k in layer.kernel_names for n in layer.mask_names(k)
        }
        for mask_name, value in layer_masks.items():
            if mask_name not in variables:
                raise ValueError(
                    f"Layer {layer_name!r} has no mask {mask_name!r}. Its masks: {sorted(variables)}"
                )
            value = np.asarray(value)
            expected = tuple(variables[mask_name].shape)
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
            checked.append((variables[mask_name], value.astype("float32")))
    for variable, value in checked:
        variable.assign(value)


def _top_k_mask(scores, density):
    """A 0/1 mask keeping the round(density * n) highest scores (at least one); stable ties."""
    flat = scores.ravel()
    keep = max(1, int(round(density * flat.size)))
    mask = np.zeros(flat.size, np.float32)
    mask[np.argsort(-flat, kind="stable")[:keep]] = 1.0
    return mask.reshape(scores.shape)


def design_masks(model, *, score="magnitude", density=(0.5, 0.5), seed=0):
    """Designs and sets masks for every masked kernel, layer by layer, at the given densities.

    Each kernel keeps its top `round(density * size)` weights by score.
    "magnitude" scores |W| (at equal densities both SMART paths then get the
    same mask); "random" draws independent uniform scores per path from `seed`.

    Args:
      model: a SmartModel converted with method "smart" or "floats".
      score: "magnitude" or "random".
      density: the share of weights kept: one number, or (d_clean, d_adv) for
        smart. FLOATS has one mask, so its two densities must be equal.
      seed: int seed for "random".

    Returns:
      The masks set, as `get_masks` returns them.

    Raises:
      ValueError: bad score or density, or a model without masked layers.

    Example:
      >>> keras_smart.design_masks(smart, score="random", density=(0.5, 0.3), seed=0)
    """
    mask_config = config_lib.MaskConfig(score=score, density=density, seed=seed)
    layers = _masked_layers(model, "design_masks")
    rng = np.random.default_rng(mask_config.seed)
    masks = {}
    for name, layer in layers.items():
        densities = mask_config.density
        if layer.mask_kind == "single":
            if densities[0] != densities[1]:
                raise ValueError(
                    f"Layer {name!r} has one mask (method='floats'), so it takes one density. "
                    f"Received: density={densities}"
                )
            densities = densities[:1]
        masks[name] = {}
        for kernel_name in layer.kernel_names:
            kernel = np.asarray(getattr(layer, kernel_name).numpy())
            for mask_name, d in zip(layer.mask_names(kernel_name), densities):
                if mask_config.score == config_lib.MaskScore.MAGNITUDE:
                    scores = np.abs(kernel)
                else:
                    scores = rng.random(kernel.shape)
                masks[name][mask_name] = _top_k_mask(scores, d)
    set_masks(model, masks)
    return masks


# --- accounting ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NonzeroCount:
    """Non-zero kernel weights and multiply-accumulates of a model, per path.

    Counts cover the kernels of every Conv2D / DepthwiseConv2D / SeparableConv2D
    / Dense layer, conditional or plain (biases and batch-norm are left out).
    `union` counts weights non-zero on either path: what a file holding both
    paths stores. MACs are per example, from each layer's first call; None when a
    layer's output shape is not static.

    Attributes:
      total: kernel weights of the dense model.
      clean, adv, union: non-zero kernel weights on each path / on either.
      macs_dense, macs_clean, macs_adv: MACs of the dense model / of each path.
      conditioning: weights that exist only to condition on lam (FiLM MLPs,
        noise scales, the second batch-norm set).
      layers: {layer name: {"total", "clean", "adv", "union", "macs_clean", ...}}.
    """

    total: int
    clean: int
    adv: int
    union: int
    macs_dense: int
    macs_clean: int
    macs_adv: int
    conditioning: int
    layers: dict

    def as_dict(self):
        return dataclasses.asdict(self)


def _positions(layer):
    """How many times one kernel weight is applied per example (output positions)."""
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None
    inner = list(shape[1:])
    if isinstance(layer, keras.layers.Dense):
        inner = inner[:-1]
    else:
        channel_axis = 0 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1
        del inner[channel_axis]
    if any(d is None for d in inner):
        return None
    return int(math.prod(inner))


def _path_kernels(layer, kernel_name):
    """(clean, adv) effective kernels of one kernel, with noise at its expectation."""
    kernel = np.asarray(getattr(layer, kernel_name).numpy())
    if not isinstance(layer, ck.ConditionalKernel) or not layer.mask_kind:
        return kernel, kernel
    masks = list(layer.kernel_masks(kernel_name).values())
    if layer.mask_kind == "single":
        return kernel * masks[0], kernel * masks[0]
    return kernel * masks[0], kernel * masks[1]


def count_nonzero(model):
    """Counts non-zero kernel weights and MACs per path and for the union of the paths.

    Args:
      model: a SmartModel (or any Keras model: both paths are then the same).

    Returns:
      A `NonzeroCount`.

    Example:
      >>> counts = keras_smart.count_nonzero(smart)
      >>> counts.clean, counts.adv, counts.union, counts.macs_adv
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`count_nonzero` expects a keras.Model. Received: {type(model).__name__}")
    per_layer = {}
    conditioning = 0
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, base.ConditionalLayer):
            conditioning += _conditioning_weights(layer)
        if not isinstance(layer, _KERNEL_LAYERS):
            continue
        positions = _positions(layer)
        row = dict.fromkeys(("total", "clean", "adv", "union"), 0)
        for kernel_name in _kernel_names(layer):
            clean, adv = _path_kernels(layer, kernel_name)
            row["total"] += clean.size
            row["clean"] += int(np.count_nonzero(clean))
            row["adv"] += int(np.count_nonzero(adv))
            row["union"] += int(np.count_nonzero((clean != 0) | (adv != 0)))
        for key, count in (("macs_dense", row["total"]), ("macs_clean", row["clean"]), ("macs_adv", row["adv"])):
            row[key] = None if positions is None else positions * count
        per_layer[layer.name] = row

    def total(key):
        values = [row[key] for row in per_layer.values()]
        return None if any(v is None for v in values) else int(sum(values))

    return NonzeroCount(
        total=total("total"),
        clean=total("clean"),
        adv=total("adv"),
        union=total("union"),
        macs_dense=total("macs_dense"),
        macs_clean=total("macs_clean"),
        macs_adv=total("macs_adv"),
        conditioning=conditioning,
        layers=per_layer,
    )


def _conditioning_weights(layer):
    """How many weights `layer` holds only to condition on lam (masks are counted as non-zeros)."""
    if isinstance(layer, ck.ConditionalKernel) and layer.noisy:
        names = [layer.noise_scale_name(k) for k in layer.kernel_names]
    else:
        names = [w for w in base.weights_by_name(layer) if w.startswith(("adv_", "film_kernel", "film_bias"))]
    return int(sum(np.asarray(getattr(layer, n).numpy()).size for n in names))
