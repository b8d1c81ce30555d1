"""The once-for-all objectives: how each example's clean and adversarial terms are weighted, and TRADES' KL (per exit, summed)."""

import tensorflow as tf

from keras_smart import config as config_lib


def row_weights(adversarial_config, lam):
    """(clean row weight, adversarial row weight) per example at trade-off `lam`, before sample weights.

    The train step feeds the clean and the adversarial predictions to the user's
    compiled loss as rows with these weights:
    - "oat": (1 - lam, lam);
    - "trades": (1, lam * beta), the adversarial weight scaling `kl_divergence`
      (TRADES has no adversarial cross-entropy row);
    - "ce_tradeoff": (1, lam * beta).

    Args:
      adversarial_config: a `keras_smart.AdversarialConfig`.
      lam: per-example trade-offs, a float32 tensor.

    Returns:
      Two float32 tensors shaped like `lam`.

    Example:
      >>> config = keras_smart.AdversarialConfig(loss="ce_tradeoff")
      >>> [w.numpy().tolist() for w in row_weights(config, tf.constant([0.0, 1.0]))]
      [[1.0, 1.0], [0.0, 8.0]]
    """
    if adversarial_config.loss == config_lib.AdversarialLoss.OAT:
        return 1.0 - lam, lam
    return tf.ones_like(lam), lam * adversarial_config.beta


def kl_divergence(logits_p, logits_q):
    """Per-example KL(softmax(logits_p) || softmax(logits_q)), in float32 (TRADES' robust term).

    Example:
      >>> kl_divergence(tf.constant([[0.0, 0.0], [2.0, 0.0]]), tf.constant([[0.0, 0.0], [0.0, 2.0]])).numpy().round(3)
      array([0.   , 1.523], dtype=float32)
    """
    log_p = tf.nn.log_softmax(tf.cast(logits_p, tf.float32))
    log_q = tf.nn.log_softmax(tf.cast(logits_q, tf.float32))
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def summed_kl_divergence(logits_p, logits_q):
    """Per-example KL(softmax(p) || softmax(q)) summed over a multi-exit model's exits (lists of logits, one per exit).

    TRADES' robust term for a multi-exit model; for one exit it is `kl_divergence`.

    Example:
      >>> p = [tf.constant([[0.0, 0.0]]), tf.constant([[2.0, 0.0]])]
      >>> q = [tf.constant([[0.0, 0.0]]), tf.constant([[0.0, 2.0]])]
      >>> summed_kl_divergence(p, q).numpy().round(3)
      array([1.523], dtype=float32)
    """
    return tf.add_n([kl_divergence(p, q) for p, q in zip(logits_p, logits_q)])
