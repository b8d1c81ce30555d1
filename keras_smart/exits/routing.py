"""Entropy routing of a multi-exit model: each example leaves at the first exit that is confident enough.

Pure TensorFlow on logits, usable inside a `tf.function` (attacks route with it
at every step) and on NumPy arrays alike.
"""

import tensorflow as tf

from keras_smart.attacks.multi_exit import entropy  # the attacks steer by it: one definition

__all__ = ["entropy", "first_confident"]


def first_confident(logits_list, thresholds):
    """The exit each example leaves at: the first side exit whose entropy is below its threshold.

    Args:
      logits_list: E logits tensors [B, C], earliest exit first (the last is the
        final output, which takes every example no side exit took).
      thresholds: E - 1 entropy thresholds (a list or float tensor), one per side
        exit; exit k takes an example when entropy(logits_k) < thresholds[k]
        (strictly), so a threshold of 0 never takes one.

    Returns:
      int32 [B]: the exit index in [0, E - 1].

    Raises:
      ValueError: `logits_list` is empty or `thresholds` does not hold E - 1 values.

    Example:
      >>> confident, unsure = tf.constant([[9.0, 0.0]]), tf.constant([[0.0, 0.0]])
      >>> keras_smart.exits.first_confident([unsure, confident, unsure], [0.5, 0.5]).numpy().tolist()
      [1]
      >>> keras_smart.exits.first_confident([unsure, unsure, unsure], [0.5, 0.5]).numpy().tolist()
      [2]
    """
    if isinstance(logits_list, (str, bytes)) or not hasattr(logits_list, "__len__") or not len(logits_list):
        raise ValueError(
            "`logits_list` must be a non-empty list of logits tensors [B, C], one per exit, earliest first. "
            f"Received: {type(logits_list).__name__}"
        )
    thresholds = tf.reshape(tf.cast(tf.convert_to_tensor(thresholds), tf.float32), [-1])
    sides = len(logits_list) - 1
    if thresholds.shape[0] is not None and thresholds.shape[0] != sides:
        raise ValueError(
            f"`thresholds` must hold one value per side exit: {sides} for {len(logits_list)} exits. "
            f"Received: {thresholds.shape[0]} value(s)"
        )
    if not sides:
        return tf.zeros([tf.shape(logits_list[-1])[0]], tf.int32)
    entropies = tf.stack([entropy(logits) for logits in logits_list[:-1]])  # [E - 1, B]
    unsure = tf.cast(entropies >= thresholds[:, None], tf.int32)
    # Exits passed = how many side exits in a row, from the first, were unsure (argmax leaves ties open).
    return tf.reduce_sum(tf.math.cumprod(unsure, axis=0), axis=0)
