"""Dual batch-norm: one set of statistics and affine parameters per path, routed by lam."""

import tensorflow as tf

from keras_smart import _compat
from keras_smart.layers import base

keras = _compat.keras

# The clean path keeps BatchNormalization's own weight names; the adversarial one adds a prefix.
ADV_PREFIX = base.ADV_PREFIX


def check_no_mask(layer, mask):
    if mask is not None:
        raise ValueError(
            f"Layer '{layer.name}' received a Keras mask; dual batch-norm computes unmasked "
            f"statistics. Ways forward: remove the masking upstream (e.g. mask_zero), "
            f"{base.keep_plain_hint(layer)}."
        )


@_compat.register_serializable
class DualBatchNormalization(base.PathPairedWeights, keras.layers.BatchNormalization):
    """A `keras.layers.BatchNormalization` with a clean (lam = 0) and an adversarial (lam > 0) set.

    Routing is by lam, not by input type (OAT): every lam > 0 uses the
    adversarial statistics, also for clean inputs. In training only the active
    set's moving statistics move. Weights: `gamma`, `beta`, `moving_mean`,
    `moving_variance` (clean) and the same names with the `adv_` prefix.

    Example:
      >>> bn = DualBatchNormalization()
      >>> y = bn(tf.random.normal((4, 8, 8, 16)), training=True)
    """

    source_class = keras.layers.BatchNormalization
    paired_weights = ("gamma", "beta", "moving_mean", "moving_variance")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_source(self)

    @classmethod
    def check_source(cls, layer):
        """Raises if the plain batch-norm `layer` uses an option dual batch-norm cannot reproduce."""
        unsupported = {
            "renorm": getattr(layer, "renorm", False),
            "synchronized": getattr(layer, "synchronized", False),
            "virtual_batch_size": getattr(layer, "virtual_batch_size", None),
        }
        unsupported = {k: v for k, v in unsupported.items() if v}
        if unsupported:
            raise ValueError(
                f"BatchNormalization layer '{layer.name}' uses {unsupported}, which dual batch-norm "
                "does not support. Ways forward: rebuild the model with plain BatchNormalization "
                f"(renorm=False, synchronized=False, virtual_batch_size=None), {base.keep_plain_hint(layer)}."
            )

    @classmethod
    def check_options(cls):
        """Dual batch-norm has no arguments of its own."""

    def _axis(self, rank):
        axis = self.axis
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise ValueError(
                    f"DualBatchNormalization '{self.name}' supports one feature axis. "
                    f"Received: axis={axis}"
                )
            axis = axis[0]
        return axis % rank

    def normalize(self, inputs, training, lam):
        """Batch-norm of `inputs` with the parameters of the path lam selects, in float32."""
        a = tf.cast(lam > 0.0, tf.float32)
        x = tf.cast(inputs, tf.float32)
        rank = x.shape.rank
        axis = self._axis(rank)
        reduction_axes = [i for i in range(rank) if i != axis]
        collector = base.statistics_collector()
        if collector is not None and self.trainable:
            mean, variance = tf.nn.moments(x, reduction_axes)
            count = tf.cast(tf.size(x) // tf.maximum(tf.shape(x)[axis], 1), tf.float32)
            collector.add(self, mean, variance + tf.square(mean), count)
        elif training and self.trainable:
            mean, variance = tf.nn.moments(x, reduction_axes)
            frozen = base.statistics_frozen()
            if frozen is not True:
                moves = tf.size(x) > 0
                self._move_statistics(mean, variance, a, nonempty=moves if frozen is False else moves & ~frozen)
        else:
            mean = self._routed("moving_mean", a)
            variance = self._routed("moving_variance", a)
        gamma = self._routed("gamma", a)
        beta = self._routed("beta", a)
        if _compat.IS_LEGACY and not (training or collector) and rank == 4 and getattr(self, "fused", False):
            # tf_keras's own inference kernel, so that conversion is exact in that flavour too.
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                tf.ones_like(mean) if gamma is None else gamma,
                tf.zeros_like(mean) if beta is None else beta,
                mean=mean,
                variance=variance,
                epsilon=self.epsilon,
                is_training=False,
                data_format="NHWC" if axis == 3 else "NCHW",
            )
            return outputs
        if axis != rank - 1:
            shape = [1] * rank
            shape[axis] = -1
            mean, variance = tf.reshape(mean, shape), tf.reshape(variance, shape)
            gamma = None if gamma is None else tf.reshape(gamma, shape)
            beta = None if beta is None else tf.reshape(beta, shape)
        return tf.nn.batch_normalization(x, mean, variance, beta, gamma, self.epsilon)

    def _move_statistics(self, mean, variance, a, nonempty):
        """Moves the active set's moving statistics towards the batch's where `nonempty` (a boolean tensor)."""
        for stat, batch_value in (("moving_mean", mean), ("moving_variance", variance)):
            for variable, weight in ((getattr(self, stat), 1.0 - a), (getattr(self, ADV_PREFIX + stat), a)):
                moved = variable * self.momentum + batch_value * (1.0 - self.momentum)
                variable.assign(tf.where(nonempty, weight * moved + (1.0 - weight) * variable, variable))

    def call(self, inputs, training=None, mask=None):
        check_no_mask(self, mask)
        outputs = self.normalize(inputs, training, self.current_tradeoff())
        return tf.cast(outputs, self.compute_dtype)
