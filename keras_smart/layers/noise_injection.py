"""EnResNet's noise injection: x + sigma * std(x) * N(0, I), drawn on every call, at inference too."""

import math

import tensorflow as tf

from keras_smart import _compat
from keras_smart import validation
from keras_smart.layers import base

keras = _compat.keras


def check_sigma(sigma):
    """`sigma` as a float: a finite real number >= 0."""
    sigma = validation.check_real(sigma, "sigma", low=0.0, meaning="(the noise's std in units of std(x))")
    if math.isinf(sigma):
        raise ValueError(f"`sigma` must be a finite real number >= 0. Received: sigma={sigma}")
    return sigma


@_compat.register_serializable
class NoiseInjection(keras.layers.Layer):
    """Adds Gaussian noise scaled by the input's own spread: out = x + sigma * std(x) * eta.

    eta ~ N(0, I) has the input's shape and is drawn afresh on every call;
    std(x) is taken per example over every non-batch axis (a [B, H, W, C]
    input has one std per example), and the gradient flows through it as
    through x. Unlike `keras.layers.GaussianNoise` the noise is on at inference
    too (the `training` flag is ignored): EnResNet's randomised defence. It is
    not a conditional layer: it does not depend on the trade-off, and `strip`
    keeps it. Inside `keras_smart.layers.expected_noise()` (read at trace
    time) it is the identity, the noise's expectation; export computes that.

    Args:
      sigma: the noise's std in units of std(x), a finite real number >= 0
        (EnResNet: 0.1). 0 is the identity.
      seed: the op seed of the noise (None: TensorFlow's global seed rules), as
        the noisy kernels take it; evaluation seeds its own graphs on top.
      **kwargs: Keras layer arguments (name, dtype, ...).

    Example:
      >>> layer = keras_smart.layers.NoiseInjection(sigma=0.1, seed=0)
      >>> inputs = tf.ones((2, 4)) * tf.constant([[1.0], [3.0]]) + tf.range(4.0)
      >>> noisy = layer(inputs)
      >>> bool(tf.reduce_any(noisy != inputs))
      True
      >>> with keras_smart.layers.expected_noise():
      ...     same = np.array_equal(layer(inputs), inputs)
      >>> same
      True
    """

    def __init__(self, sigma=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.sigma = check_sigma(sigma)
        self.seed = validation.check_seed(seed, allow_none=True)
        self.supports_masking = True

    def call(self, inputs, training=None):  # pylint: disable=unused-argument
        del training  # active at inference too
        if self.sigma == 0.0 or not base.noise_enabled():
            return tf.identity(inputs)
        x = tf.convert_to_tensor(inputs)
        values = tf.cast(x, tf.float32)
        rank = values.shape.rank
        axes = list(range(1, rank)) if rank is not None else tf.range(1, tf.rank(values))
        spread = tf.math.reduce_std(values, axis=axes, keepdims=True)
        eta = tf.random.normal(tf.shape(values), dtype=tf.float32, seed=self.seed)
        return x + tf.cast(self.sigma * spread * eta, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma, "seed": self.seed}
