"""Dual layer-norm: one affine pair (gamma, beta) per path, routed by lam; no statistics to keep."""

import tensorflow as tf

from keras_smart import _compat
from keras_smart.layers import base

keras = _compat.keras


@_compat.register_serializable
class DualLayerNormalization(base.PathPairedWeights, keras.layers.LayerNormalization):
    """A `keras.layers.LayerNormalization` with a clean (lam = 0) and an adversarial (lam > 0) affine pair.

    Every example is normalised with its own statistics, as in Keras, then
    scaled and shifted with the pair of the path lam selects (a step at lam > 0,
    like dual batch-norm). Weights: `gamma`, `beta` (clean, Keras's names) and
    `adv_gamma`, `adv_beta`, which `from_layer` starts as copies of the clean
    ones. The epsilon, axes, `center` / `scale` flags and Keras 3's
    `rms_scaling` behave as in Keras.

    Example:
      >>> ln = DualLayerNormalization()
      >>> y = ln(tf.random.normal((2, 5, 8)))
    """

    source_class = keras.layers.LayerNormalization
    paired_weights = ("gamma", "beta")

    @classmethod
    def check_source(cls, layer):
        """Every LayerNormalization configuration is supported."""

    @classmethod
    def check_options(cls):
        """Dual layer-norm has no arguments of its own."""

    def _axes(self, rank):
        axes = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        return sorted(a % rank for a in axes)

    def _fused_in_tf_keras(self, axes, rank):
        """tf_keras's rule for its fused kernel: trailing contiguous axes, epsilon >= 1.001e-5, float32."""
        trailing = axes[-1] == rank - 1 and axes[-1] - axes[0] == len(axes) - 1
        return trailing and self.epsilon >= 1.001e-5 and self.dtype == "float32"

    def normalize(self, inputs, lam):
        """Layer-norm of `inputs` with the affine pair of the path lam selects, in float32."""
        a = tf.cast(lam > 0.0, tf.float32)
        x = tf.cast(inputs, tf.float32)
        rank = x.shape.rank
        axes = self._axes(rank)
        gamma, beta = self._routed("gamma", a), self._routed("beta", a)
        shape = [1] * rank
        for axis in axes:
            shape[axis] = -1 if x.shape[axis] is None else x.shape[axis]
        if axes != [rank - 1]:  # Keras broadcasts the parameters to the normalised axes
            gamma = None if gamma is None else tf.reshape(gamma, shape)
            beta = None if beta is None else tf.reshape(beta, shape)
        if getattr(self, "rms_scaling", False):  # Keras 3: x / sqrt(var(x) + epsilon) * gamma, no beta
            outputs = x * tf.math.rsqrt(tf.math.reduce_variance(x, axis=axes, keepdims=True) + self.epsilon)
            return outputs if gamma is None else outputs * gamma
        if _compat.IS_LEGACY and self._fused_in_tf_keras(axes, rank):
            # tf_keras's own kernel for contiguous trailing axes, so that conversion is exact there too.
            dynamic = tf.shape(x)
            pre_dim = tf.reduce_prod(dynamic[: axes[0]])
            in_dim = tf.reduce_prod(dynamic[axes[0]:])
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                tf.reshape(x, [1, pre_dim, in_dim, 1]),
                scale=tf.ones([pre_dim], tf.float32),
                offset=tf.zeros([pre_dim], tf.float32),
                epsilon=self.epsilon,
                data_format="NCHW",
            )
            outputs = tf.reshape(outputs, dynamic)
            if gamma is not None:
                outputs = outputs * gamma
            if beta is not None:
                outputs = outputs + beta
            return outputs
        mean, variance = tf.nn.moments(x, axes, keepdims=True)
        return tf.nn.batch_normalization(x, mean, variance, beta, gamma, self.epsilon)

    def call(self, inputs):
        outputs = self.normalize(inputs, self.current_tradeoff())
        outputs.set_shape(inputs.shape)
        return tf.cast(outputs, self.compute_dtype)
