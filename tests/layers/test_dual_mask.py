"""SMART dual-mask kernels: the three trade-off modes."""

import numpy as np
import pytest
import tensorflow as tf

from keras_smart import layers as cl


def _dense(mode):
    layer = cl.DualMaskDense(8, tradeoff_mode=mode, seed=0)
    layer.build((None, 16))
    rng = np.random.default_rng(0)
    layer.assign_mask("kernel_clean_mask", (rng.random((16, 8)) < 0.5).astype("float32"))
    layer.assign_mask("kernel_adv_mask", (rng.random((16, 8)) < 0.5).astype("float32"))
    return layer


def _kernel(layer, lam):
    with cl.expected_noise():
        return layer.conditional_kernel("kernel", tf.constant(lam)).numpy()


@pytest.mark.parametrize("mode", ["switch", "blend", "noise"])
def test_ends_of_the_tradeoff_use_one_mask_each(mode):
    layer = _dense(mode)
    w = layer.kernel.numpy()
    np.testing.assert_array_equal(_kernel(layer, 0.0), w * layer.mask_value("kernel_clean_mask"))
    np.testing.assert_array_equal(_kernel(layer, 1.0), w * layer.mask_value("kernel_adv_mask"))


def test_switch_uses_the_adversarial_mask_for_every_positive_lam():
    layer = _dense("switch")
    np.testing.assert_array_equal(_kernel(layer, 0.1), _kernel(layer, 1.0))


def test_blend_interpolates_the_masks():
    layer = _dense("blend")
    w = layer.kernel.numpy()
    expected = w * (0.7 * layer.mask_value("kernel_clean_mask") + 0.3 * layer.mask_value("kernel_adv_mask"))
    np.testing.assert_allclose(_kernel(layer, 0.3), expected, atol=1e-7)


def test_noise_mode_adds_noise_only_inside_the_adversarial_mask():
    layer = _dense("noise")
    assert layer.noisy and hasattr(layer, "kernel_noise_scale")
    noisy = layer.conditional_kernel("kernel", tf.constant(1.0)).numpy()
    adv = layer.mask_value("kernel_adv_mask")
    assert np.all(noisy[adv == 0] == 0)
    assert np.abs(noisy - _kernel(layer, 1.0)).max() > 0
    np.testing.assert_array_equal(layer.conditional_kernel("kernel", tf.constant(0.0)).numpy(), _kernel(layer, 0.0))
