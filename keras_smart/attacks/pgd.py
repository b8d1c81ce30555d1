"""Projected gradient descent (Madry et al. 2018), L-inf and L2, as an in-graph loop."""

import tensorflow as tf

from keras_smart.attacks import common


def pgd(
    model_fn,
    x,
    y,
    *,
    eps,
    steps,
    step_size,
    norm="linf",
    random_start=True,
    clip_min=0.0,
    clip_max=1.0,
    targeted=False,
    loss_fn=None,
    seed=None,
    eot_samples=1,
):
    """Iterated gradient steps, each projected back onto the eps-ball around x and the clip range.

    The loop is a `tf.while_loop`, so inside `tf.function` the model appears in
    the graph once whatever `steps` is. Batch-norm mode is the caller's choice
    through `model_fn` (`training=False`: inference mode, no statistics move).

    Args:
      model_fn: a callable mapping a batch of inputs to logits.
      x: a batch of inputs.
      y: labels (integer ids or one-hot rows); target classes if `targeted`.
      eps: the budget (> 0); a tensor or variable (an eps schedule) is used as is.
      steps: the number of steps (int >= 1).
      step_size: the length of each step (> 0), in the norm's units.
      norm: "linf" (sign steps) or "l2" (normalised-gradient steps).
      random_start: start from a uniform random point of the eps-ball.
      clip_min, clip_max: the valid input range (None: unbounded).
      targeted: move towards `y` instead of away from it.
      loss_fn: `loss_fn(y, logits)` -> per-example loss; default cross-entropy.
      seed: seed of the random start.
      eot_samples: forward passes each step's gradient averages over (expectation
        over transformation, for randomised models); 1 for deterministic ones.

    Returns:
      The adversarial batch (no gradient flows back through it).

    Raises:
      ValueError / TypeError: for a non-positive eps or step size, steps < 1, an unknown norm,
        eot_samples < 1.

    Example:
      >>> x_adv = pgd(lambda t: model(t, training=False), x, y, eps=0.3, steps=40, step_size=0.01)
    """
    common.check_positive(eps, "eps")
    common.check_positive(step_size, "step_size")
    steps = common.check_steps(steps)
    norm = common.check_norm(norm)
    eot_samples = common.check_eot_samples(eot_samples)
    loss_fn = loss_fn or common.default_loss
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    y = tf.convert_to_tensor(y)
    eps = tf.cast(eps, x.dtype)
    step_size = tf.cast(step_size, x.dtype)

    x_adv = x
    if random_start:
        x_adv = common.clip(x + common.random_start(x, eps, norm, seed), clip_min, clip_max)

    def body(i, x_adv):
        grad = common.loss_gradient(model_fn, x_adv, y, loss_fn, targeted, eot_samples)
        moved = x_adv + common.step(grad, step_size, norm)
        x_adv = common.clip(x + common.project(moved - x, eps, norm), clip_min, clip_max)
        return i + 1, tf.stop_gradient(x_adv)

    _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv))
    return x_adv
