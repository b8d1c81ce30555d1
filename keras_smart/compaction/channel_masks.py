"""Whether a SmartModel's masks keep or drop whole output channels at a trade-off, which compaction needs."""

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import registry
from keras_smart.layers import conditional_kernel as ck
from keras_smart.masks import channel_layers

keras = _compat.keras

FIX = (
    'Design channel masks with keras_smart.design_masks(model, ..., granularity="channel"), or strip '
    "without compact=True."
)


def check_channel_structured(model, tradeoff):
    """Refuses a model whose masks used at `tradeoff` are missing or mix zeros and ones in a channel.

    Args:
      model: a `SmartModel`.
      tradeoff: the trade-off in [0, 1] whose masks are read (a dual-mask layer
        uses its clean mask at 0, its adversarial mask above 0, both in blend
        mode between 0 and 1).

    Returns:
      How many whole output channels the masks used at `tradeoff` drop (summed over masks).

    Raises:
      ValueError: `model` has no masks (method float or oat), or a mask used at
        `tradeoff` is not channel-structured (the message names the layer, the
        mask and the first mixed channel).

    Example:
      >>> keras_smart.compaction.check_channel_structured(smart, 0.0)  # all-ones masks keep every channel
      0
      >>> keras_smart.set_masks(smart, {"conv": {"kernel_adv_mask": np.eye(9)[:, :8].reshape(3, 3, 1, 8)}})
      >>> keras_smart.compaction.check_channel_structured(smart, 1.0)
      Traceback (most recent call last):
      ...
      ValueError: Layer 'conv': its mask 'kernel_adv_mask' (used at trade-off 1) is not channel-structured: ...
    """
    layers = [l for l in _compat.flatten_layers(model) if isinstance(l, ck.ConditionalKernel) and l.mask_kind]
    order = {id(layer): index for index, layer in enumerate(_graph_order(model))}
    layers.sort(key=lambda layer: order.get(id(layer), len(order)))  # the first offending layer is the earliest
    if not layers:
        method = registry.method_of(model)
        raise ValueError(
            f"compact=True removes the output channels a model's masks drop, and model '{model.name}' has no "
            f"masks (method {method.value if method else None!r}). Convert with method='smart' (or 'floats') and "
            + FIX
        )
    dropped = 0
    for layer in layers:
        path = float(layer.path_weight(tf.constant(tradeoff, tf.float32)))
        for kernel_name in registry.kernel_names(layer):
            for mask_name, mask in layer.kernel_masks(kernel_name).items():
                if (mask_name.endswith("_clean_mask") and path >= 1.0) or (
                    mask_name.endswith("_adv_mask") and path <= 0.0
                ):
                    continue  # not used at this trade-off
                dropped += _check_mask(layer, mask_name, mask, channel_layers.channel_axis(layer, kernel_name), tradeoff)
    return dropped


def _graph_order(model):
    """The layers of `model` in its graph's order, nested models opened in place."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _graph_order(layer)
        yield layer


def _check_mask(layer, mask_name, mask, axis, tradeoff):
    """Raises unless every channel of `mask` along `axis` is all 0 or all 1; returns how many are all 0."""
    per_channel = np.moveaxis(np.asarray(mask), axis, -1).reshape(-1, mask.shape[axis])
    mixed = np.flatnonzero(per_channel.min(0) != per_channel.max(0))
    if mixed.size:
        channel = int(mixed[0])
        kept = int(per_channel[:, channel].sum())
        raise ValueError(
            f"Layer '{layer.name}': its mask '{mask_name}' (used at trade-off {tradeoff:g}) is not "
            f"channel-structured: channel {channel} keeps {kept} of its {per_channel.shape[0]} weights "
            f"({mixed.size} of {per_channel.shape[1]} channels mix zeros and ones). compact=True removes whole "
            f"channels only. " + FIX
        )
    return int(np.sum(per_channel.max(0) == 0))
