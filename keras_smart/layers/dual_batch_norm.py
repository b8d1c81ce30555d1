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
        elif training and self.trainable and base.batch_norm_row_groups() is not None:
            return self._normalize_by_tradeoff(x, a, axis, base.batch_norm_row_groups())
        elif training and self.trainable:
            mean, variance = tf.nn.moments(x, reduction_axes)
            moves = tf.size(x) > 0
            self._move_statistics(
                {stat: tf.where(moves, (1.0 - self.momentum) * value, 0.0)
                 for stat, value in (("moving_mean", mean), ("moving_variance", variance))},
                tf.where(moves, self.momentum, 1.0), a,
            )
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

    def _normalize_by_tradeoff(self, x, a, axis, groups):
        """Training-mode batch-norm where the rows of each lam value are their own batch.

        The train step's adversarial rows carry lam per row (element sampling).
        Each value's rows are normalised with their own statistics and the
        moving statistics move once per value present, in `base.batch_norm_groups`
        order: what a step that splits its batch by lam computes. Normalising the
        mixed rows together cost the digits demo 18 AutoAttack points at lam = 1.
        `groups` (`base.RowGroups`) holds the [rows, values] membership: static shapes.
        """
        rank = x.shape.rank
        per_row_axes = [i for i in range(1, rank) if i != axis]
        shape = [-1] + [x.shape[i] if i == axis else 1 for i in range(1, rank)]
        member, share, present = groups

        def per_value(per_row):  # [rows, C] -> each value's mean, [values, C]
            return tf.matmul(share, per_row, transpose_a=True)

        def per_row(per_value_stat):  # [values, C] -> each row's value's, shaped to broadcast against x
            return tf.reshape(tf.matmul(member, per_value_stat), shape)

        value_mean = per_value(tf.reduce_mean(x, per_row_axes) if per_row_axes else x)
        centred = x - per_row(value_mean)
        squares = tf.square(centred)
        value_variance = per_value(tf.reduce_mean(squares, per_row_axes) if per_row_axes else squares)
        # Moving once per value present, in order, is one move by closed form: the
        # statistics decay by momentum ** (values present), a value by momentum ** (values present after it).
        weights = present * (1.0 - self.momentum) * self.momentum ** tf.cumsum(present, exclusive=True, reverse=True)
        self._move_statistics(
            {"moving_mean": tf.linalg.matvec(value_mean, weights, transpose_a=True),
             "moving_variance": tf.linalg.matvec(value_variance, weights, transpose_a=True)},
            self.momentum ** tf.reduce_sum(present), a,
        )
        outputs = centred * tf.math.rsqrt(per_row(value_variance) + self.epsilon)
        gamma, beta = self._routed("gamma", a), self._routed("beta", a)
        if gamma is not None:
            outputs = outputs * tf.reshape(gamma, shape[1:])
        return outputs if beta is None else outputs + tf.reshape(beta, shape[1:])

    def _move_statistics(self, increments, decay, a):
        """Moves the active set's moving statistics to `decay * statistic + increments[statistic]`.

        One batch: decay = momentum and increment = (1 - momentum) * its value
        (decay 1, increment 0: no move). Statistics stay still under `base.frozen_statistics`.
        """
        frozen = base.statistics_frozen()
        if frozen is True:
            return
        if frozen is not False:
            decay = tf.where(frozen, 1.0, decay)
            increments = {stat: tf.where(frozen, 0.0, increment) for stat, increment in increments.items()}
        for stat, increment in increments.items():
            for variable, weight in ((getattr(self, stat), 1.0 - a), (getattr(self, ADV_PREFIX + stat), a)):
                moved = variable * decay + increment
                variable.assign(weight * moved + (1.0 - weight) * variable)

    def call(self, inputs, training=None, mask=None):
        check_no_mask(self, mask)
        outputs = self.normalize(inputs, training, self.current_tradeoff())
        return tf.cast(outputs, self.compute_dtype)
