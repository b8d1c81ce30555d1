"""The fast gradient (sign) method: one eps-sized step from the clean input."""

import tensorflow as tf

from keras_smart.attacks import common


def fgsm(model_fn, x, y, *, eps, norm="linf", clip_min=0.0, clip_max=1.0, targeted=False, loss_fn=None, eot_samples=1):
    """One step of size eps along the loss gradient's sign (L-inf) or direction (L2).

    Args:
      model_fn: a callable mapping a batch of inputs to logits (e.g.
        `lambda t: model(t, training=False)`). Used inside `tf.function` as is.
      x: a batch of inputs.
      y: labels: integer class ids, or one-hot rows; target classes if `targeted`.
      eps: the perturbation budget (> 0); a tensor or variable is used as is.
      norm: "linf" or "l2".
      clip_min, clip_max: the valid input range (None: unbounded).
      targeted: move towards `y` instead of away from it.
      loss_fn: `loss_fn(y, logits)` -> per-example loss; default cross-entropy
        from logits.
      eot_samples: forward passes the gradient averages over (expectation over
        transformation, for randomised models).

    Returns:
      The adversarial batch, with ||x_adv - x|| <= eps, inside the clip range.

    Example:
      >>> x_adv = fgsm(lambda t: smart(t, training=False), x[:8], y[:8], eps=0.1)
      >>> x_adv.shape, float(tf.reduce_max(tf.abs(x_adv - x[:8]))) <= 0.1 + 1e-6
      (TensorShape([8, 28, 28, 1]), True)
    """
    norm, eot_samples = common.check_attack_settings(eps, norm, eot_samples)
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y)
    eps = tf.cast(eps, x.dtype)
    grad = common.loss_gradient(model_fn, x, y, loss_fn or common.default_loss, targeted, eot_samples)
    return tf.stop_gradient(common.clip(x + common.step(grad, eps, norm), clip_min, clip_max))
