"""FLOAT / FLOATS noisy kernels: noise scaled by lam, alpha and std(W); the mask survives noise."""

import numpy as np
import pytest
import tensorflow as tf

from keras_smart import layers as cl


def _dense(**options):
    layer = cl.NoisyDense(64, use_bias=False, **options)
    layer.build((None, 128))
    return layer


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_noise_std_is_lam_alpha_std_w(lam):
    layer = _dense(noise_init=0.4, seed=1)
    w = layer.kernel.numpy()
    kernel = layer.conditional_kernel("kernel", tf.constant(lam)).numpy()
    expected = lam * 0.4 * w.std()
    assert np.std(kernel - w) == pytest.approx(expected, rel=0.05, abs=1e-7)


def test_noise_is_redrawn_each_call_and_off_in_expected_noise():
    layer = _dense(seed=0)
    lam = tf.constant(1.0)
    first = layer.conditional_kernel("kernel", lam).numpy()
    assert np.abs(first - layer.conditional_kernel("kernel", lam).numpy()).max() > 0
    with cl.expected_noise():
        np.testing.assert_array_equal(layer.conditional_kernel("kernel", lam).numpy(), layer.kernel.numpy())


def test_noise_scale_learns_from_the_loss():
    layer = _dense(seed=0)
    x = tf.random.normal((4, 128))
    with tf.GradientTape() as tape, cl.tradeoff_override(1.0):
        loss = tf.reduce_sum(tf.square(layer(x)))
    assert float(tape.gradient(loss, layer.kernel_noise_scale)) != 0.0


def test_floats_mask_zeroes_survive_noise():
    layer = _dense(masked=True, seed=0)
    mask = (np.random.default_rng(0).random(layer.kernel.shape) < 0.3).astype("float32")
    layer.assign_mask("kernel_mask", mask)
    kernel = layer.conditional_kernel("kernel", tf.constant(1.0)).numpy()
    assert np.all(kernel[mask == 0] == 0)


@pytest.mark.parametrize("options, error", [({"noise_init": -1.0}, ValueError), ({"seed": "a"}, TypeError)])
def test_bad_noise_options_are_rejected(options, error):
    with pytest.raises(error, match="noise_init|seed"):
        cl.NoisyDense(3, **options)
