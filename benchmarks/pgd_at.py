"""The hand-written PGD-AT baseline the benchmarks compare keras_smart's training against."""

import tensorflow as tf

from keras_smart import _compat
from keras_smart import attacks

keras = _compat.keras


class PGDATModel(keras.Model):
    """A plain model trained on (1 - lam) * CE(x) + lam * CE(x_adv) at one fixed lam (PGD-AT at lam = 1).

    x_adv comes from in-graph PGD outside the gradient tape, with batch-norm in
    inference mode; the clean and adversarial passes run in training mode, each
    with its own batch statistics (as SmartModel's groups do). `eps` is a
    variable: an eps warm-up assigns it and the traced step reads it.
    """

    def __init__(self, inputs, outputs, attack, lam=1.0, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.pgd_settings = _Untracked(attack=attack, lam=float(lam))
        self.eps = tf.Variable(attack.eps, trainable=False, name="pgd_eps")

    def train_step(self, data):
        attack, lam = self.pgd_settings.attack, self.pgd_settings.lam
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch = tf.shape(x)[0]
        x_adv = attacks.run(attack, lambda t: self(t, training=False), x, y, eps=self.eps)
        with tf.GradientTape() as tape:
            rows, weights = [self(x_adv, training=True)], [tf.fill([batch], lam)]
            if lam < 1.0:
                rows.insert(0, self(x, training=True))
                weights.insert(0, tf.fill([batch], 1.0 - lam))
            # The compiled loss averages over all rows: scale to a per-example mean over the batch.
            loss = _compat.training_loss(
                self, x, tf.concat([y] * len(rows), 0), tf.concat(rows, 0), tf.concat(weights, 0) * float(len(rows)), batch
            )
            scaled = _compat.scale_loss(self, loss)
        _compat.apply_gradients(self, tape, scaled)
        return self.compute_metrics(x, y, rows[0], None)


class _Untracked:
    """Settings Keras must not track."""

    def __init__(self, **values):
        self.__dict__.update(values)
