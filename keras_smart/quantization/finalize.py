"""finalize(): the end of Binary-Relax training, every relaxed kernel replaced by its projection."""

import math

from keras_smart import _compat
from keras_smart.layers import conditional_kernel as ck
from keras_smart.layers import quantized

keras = _compat.keras


def quantized_layers(model):
    """The layers of `model` (nested models included) whose `quantization` is set, in model order.

    Example:
      >>> keras_smart.quantization.quantized_layers(smart)
      []
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`quantized_layers` expects a keras.Model. Received: {type(model).__name__}")
    return [
        layer
        for layer in _compat.flatten_layers(model)
        if isinstance(layer, ck.ConditionalKernel) and layer.quantization is not None
    ]


def finalize(model):
    """Makes a relaxed model's kernels exactly quantized, in place; returns `model`.

    Every relaxed kernel W becomes Q(W) (its projection over the weights its
    masks keep, so masked weights become 0) and every relax_eta +inf: the
    model then computes with exactly its (quantized) variables, and
    `keras_smart.strip(model, tradeoff=t)` has exactly quantized kernels on
    every path. Calling it again changes nothing (the projections are
    idempotent).

    Raises:
      ValueError: `model` has no quantized layers (see `binary_relax`).

    Example:
      >>> relaxed = keras_smart.quantization.binary_relax(smart, "ternary", per_channel=True)
      >>> relaxed = keras_smart.quantization.finalize(relaxed)
      >>> kernel = relaxed.get_layer("conv").kernel.numpy()
      >>> [len(np.unique(np.abs(kernel[..., c]))) <= 2 for c in range(2)]
      [True, True]
    """
    layers = quantized_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no quantized layers: make one with "
            "keras_smart.quantization.binary_relax(model, bits=...) and train it first."
        )
    for layer in layers:
        options = layer.quantization
        for kernel_name in layer.kernel_names:
            variable = getattr(layer, kernel_name)
            support = layer.quantization_support(kernel_name)
            axes = layer.channel_axes(kernel_name) if options["per_channel"] else None
            variable.assign(quantized.project(variable, options["bits"], axes=axes, support=support))
        layer.relax_eta.assign(math.inf)
    return model
