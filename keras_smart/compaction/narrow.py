"""compact(): a plain model rebuilt physically narrower, without the output channels that can go exactly."""

import numpy as np

from keras_smart import _compat
from keras_smart import conversion
from keras_smart.compaction import analysis
from keras_smart.layers import base
from keras_smart.masks import channel_layers

keras = _compat.keras


def compact(model):
    """Drops every output channel of a plain model that can go without changing its outputs.

    An output channel whose kernel slice is all zero computes a constant (its
    bias, through its activation). It is removed from its kernel layer, from the
    batch-norm, depthwise and other per-channel layers it flows through, and
    from the next kernel layer's input, whose bias absorbs the constant, where
    that is exact (see `keras_smart.compaction.analysis`). Channels that reach
    an addition, a concatenation, a model output or a layer not listed there
    are kept; of the non-zero constants before a zero-padded convolution one
    is kept, and carries the others. Only the
    top level is compacted (nested models are kept as they are).

    Args:
      model: a plain Functional Keras model (e.g. what `keras_smart.strip` returns).

    Returns:
      A new Functional model with the same layer names and outputs (to float
      round-off) and fewer filters / units where channels were dropped; `model`
      itself when no channel can be dropped.

    Raises:
      TypeError: `model` is not a Functional Keras model.

    Example:
      >>> import warnings
      >>> with warnings.catch_warnings():
      ...     warnings.simplefilter("ignore")  # the logits make the output: they keep every channel
      ...     masks = keras_smart.design_masks(smart, density=0.5, granularity="channel")
      >>> plain = keras_smart.strip(smart, tradeoff=0.0)
      >>> narrow = keras_smart.compaction.compact(plain)
      >>> plain.get_layer("conv").filters, narrow.get_layer("conv").filters
      (8, 4)
      >>> np.allclose(narrow(x[:4]), plain(x[:4]), atol=1e-5)
      True
    """
    if not isinstance(model, keras.Model) or channel_layers.read_graph(model) is None:
        raise TypeError(
            "`compact` expects a Functional Keras model (e.g. what keras_smart.strip returns). "
            f"Received: {type(model).__name__}"
        )
    plan = analysis.plan(model)
    if not plan.out_keep:
        return model

    def narrower(layer, entry):
        if layer.name not in plan.touched:
            return entry
        entry = {key: value for key, value in entry.items() if key != "build_config"}
        config = dict(entry["config"])
        if layer.name in plan.out_keep:
            config["units" if channel_layers.is_dense(layer) else "filters"] = int(plan.out_keep[layer.name].size)
        if layer.name in plan.bias_add and np.any(plan.bias_add[layer.name] != 0):
            config["use_bias"] = True
        entry["config"] = config
        return entry

    narrow = conversion.rebuild(model, narrower, keras.Model)
    for target in narrow.layers:
        source = model.get_layer(target.name)
        if target.name in plan.touched and target.weights:
            base.assign_weights_by_name(target, _sliced(source, plan))
        elif isinstance(target, keras.Model):
            conversion.copy_weights(source, target)
        elif source.weights:
            target.set_weights(source.get_weights())
    return narrow


def _sliced(layer, plan):
    """{weight name: value} of `layer` in the narrow model."""
    values = base.weights_by_name(layer)
    name = layer.name
    if name in plan.channel_keep:
        keep = plan.channel_keep[name]
        if channel_layers.is_depthwise(layer):
            values[_compat.DEPTHWISE_KERNEL] = values[_compat.DEPTHWISE_KERNEL][..., keep, :]
            if "bias" in values:
                values["bias"] = values["bias"][keep]
        else:  # batch-norm: every weight is one value per channel
            values = {key: value[keep] for key, value in values.items()}
    if name in plan.in_keep:
        kernel = values["kernel"] + plan.kernel_add.get(name, 0.0)
        values["kernel"] = np.take(kernel, plan.in_keep[name], axis=-2)
        bias_add = plan.bias_add[name]
        if "bias" in values:
            values["bias"] = values["bias"] + bias_add
        elif np.any(bias_add != 0):
            values["bias"] = bias_add
    if name in plan.out_keep:
        kernel_name = channel_layers.producer_kernel(layer)
        keep = plan.out_keep[name]
        values[kernel_name] = values[kernel_name][..., keep]
        if "bias" in values:
            values["bias"] = values["bias"][keep]
    return values
