"""A batch whose examples carry different lam: kernels that depend on lam itself (noise, blend) compute per example."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import layers as cl
from keras_smart.layers import dual_mask
from keras_smart.layers import noisy
from tests.layers import cases
from tests.models import keras

_DUAL = [c for c in cases.CLASSES if issubclass(c, dual_mask.DualMask) or c.__name__ == "DualMaskMultiHeadAttention"]
_NOISY = [c for c in cases.CLASSES if issubclass(c, noisy.Noisy) or c.__name__ == "NoisyMultiHeadAttention"]


def _kernel_layers(layer):
    if isinstance(layer, cl.ConditionalKernel):
        return [layer]
    return [l for l in layer.projections().values() if isinstance(l, cl.ConditionalKernel)]


def _with_different_masks(layer, x):
    inputs = keras.Input(x.shape[1:])
    model = keras_smart.SmartModel(inputs, cases.call(layer, inputs))
    keras_smart.design_masks(model, score="random", density=(0.6, 0.6), max_overlap=0.5, seed=0)


@pytest.mark.parametrize("cls", _DUAL, ids=[c.__name__ for c in _DUAL])
def test_blend_with_one_lam_per_example_is_each_example_at_its_own_lam(cls):
    source, x = cases.source_and_input(cls)
    layer = cls.from_layer(source, tradeoff_mode="blend")
    _with_different_masks(layer, x)
    lam = np.array([0.0, 0.7] + [0.3] * (len(x) - 2), "float32")[: len(x)]
    with cl.tradeoff_override(tf.constant(lam)):
        together = np.asarray(cases.call(layer, x))
    for i in range(len(x)):
        with cl.tradeoff_override(float(lam[i])):
            alone = np.asarray(cases.call(layer, x[i : i + 1]))
        np.testing.assert_allclose(together[i : i + 1], alone, atol=2e-5, err_msg=f"example {i} at lam={lam[i]}")


@pytest.mark.parametrize("cls", _NOISY, ids=[c.__name__ for c in _NOISY])
def test_noise_scales_with_each_examples_own_lam(cls):
    source, x = cases.source_and_input(cls)
    layer = cls.from_layer(source, noise_init=0.5, seed=3)
    for kernel_layer in _kernel_layers(layer):
        kernel_layer.activation = None  # the output is then linear in the kernel
    # One input three times, at lam 1, 0.5 and 0.25: one noise draw, scaled per example.
    triple = np.repeat(x[:1], 3, axis=0)
    with cl.tradeoff_override(tf.constant([1.0, 0.5, 0.25])):
        out = np.asarray(cases.call(layer, triple), "float64")
    with cl.expected_noise(), cl.tradeoff_override(1.0):
        clean = np.asarray(cases.call(layer, x[:1]), "float64")[0]
    shift = out - clean
    assert np.abs(shift[0]).max() > 1e-3, "noise at lam = 1"
    kernels = _kernel_layers(layer)
    if kernels[0] is not layer:  # attention: a softmax between the projections, not linear in lam
        assert np.abs(shift[2]).max() < np.abs(shift[0]).max()
    elif len(layer.kernel_names) == 1:  # linear in lam
        np.testing.assert_allclose(shift[0], 2.0 * shift[1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(shift[1], 2.0 * shift[2], rtol=1e-4, atol=1e-5)
    else:  # two noisy kernels in sequence: lam * a + lam^2 * b
        np.testing.assert_allclose(shift[0] - 6.0 * shift[1] + 8.0 * shift[2], 0.0, atol=1e-4)
