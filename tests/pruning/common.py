"""What the pruning tests share: models with path masks, and the check that a zero is zero on every path."""

import numpy as np
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import layers as cl
from keras_smart import registry
from tests import models

MASK_DENSITY = {"smart": (0.8, 0.6), "floats": 0.8}


def model(method, builder=models.conv_block_model):
    """A converted model with path masks designed (smart, floats), or the plain model."""
    if method == "plain":
        return builder()
    smart = keras_smart.convert(builder(), method)
    if method in MASK_DENSITY:
        keras_smart.design_masks(smart, score="random", density=MASK_DENSITY[method], seed=3)
    return smart


def kernel_layers(model):
    return [l for l in _compat.flatten_layers(model) if registry.kernel_names(l)]


def kernels(model):
    """{"layer/kernel": NumPy copy} of every kernel."""
    return {
        f"{l.name}/{name}": np.array(getattr(l, name).numpy()) for l in kernel_layers(model) for name in registry.kernel_names(l)
    }


def assert_zero_on_every_path(model):
    """Where a kernel is zero every path computes with zero, and the path masks lie inside its non-zeros."""
    for layer in kernel_layers(model):
        if not isinstance(layer, cl.ConditionalKernel):
            continue
        for name in registry.kernel_names(layer):
            kernel = getattr(layer, name).numpy()
            for lam in (0.0, 0.3, 1.0):  # noise on: FLOAT's noise must spare the zeros too
                effective = layer.conditional_kernel(name, tf.constant(lam)).numpy()
                assert np.all(effective[kernel == 0] == 0), (layer.name, name, lam)
            masks = list(layer.kernel_masks(name).values())
            if masks:
                union = np.any([m > 0 for m in masks], axis=0)
                np.testing.assert_array_equal(kernel != 0, union, err_msg=f"{layer.name}/{name}")
