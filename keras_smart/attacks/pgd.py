"""Projected gradient descent (Madry et al. 2018), L-inf and L2, fixed or cosine steps, as an in-graph loop."""

import math

import tensorflow as tf

from keras_smart import config as config_lib
from keras_smart import validation
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
    step_schedule="fixed",
):
    """Iterated gradient steps, each projected back onto the eps-ball around x and the clip range.

    The loop is a `tf.while_loop`, so inside `tf.function` the model appears in
    the graph once whatever `steps` is. Batch-norm mode is the caller's choice
    through `model_fn` (`training=False`: inference mode, no statistics move).

    With `step_schedule="cosine"`, step t of T (t = 0..T-1) has length
    step_size * 0.5 * (1 + cos(pi * t / T)): it starts at `step_size` and
    decays towards 0, so large early steps explore and small late ones settle
    (the steps add up to step_size * (T + 1) / 2). Start it at 2 * eps.

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
      seed: seed of the random start: None, an int (the op seed of TensorFlow's
        stateful random ops), or a stateless seed, an int tensor of shape [2]
        (`tf.random.stateless_*`: the same seed always gives the same start, in
        any process; training keys it by the optimizer step).
      eot_samples: forward passes each step's gradient averages over (expectation
        over transformation, for randomised models); 1 for deterministic ones.
      step_schedule: "fixed" (every step `step_size`, the default) or "cosine"
        (decaying from `step_size` towards 0, see above). For APGD's adaptive
        steps use `attacks.apgd`.

    Returns:
      The adversarial batch (no gradient flows back through it).

    Raises:
      ValueError / TypeError: for a non-positive eps or step size, steps < 1, an unknown norm,
        eot_samples < 1, a step schedule other than "fixed" or "cosine".

    Example:
      >>> x_adv = pgd(lambda t: smart(t, training=False), x[:8], y[:8], eps=0.1, steps=2, step_size=0.05)
      >>> x_adv.shape, float(tf.reduce_max(tf.abs(x_adv - x[:8]))) <= 0.1 + 1e-6
      (TensorShape([8, 28, 28, 1]), True)
    """
    steps, norm, eot_samples, cosine = _check_settings(eps, steps, step_size, norm, eot_samples, step_schedule)
    seed = common.check_seed(seed)
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
        size = _step_length(step_size, i, steps) if cosine else step_size
        moved = x_adv + common.step(grad, size, norm)
        x_adv = common.clip(x + common.project(moved - x, eps, norm), clip_min, clip_max)
        return i + 1, tf.stop_gradient(x_adv)

    _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv))
    return x_adv


def _step_length(step_size, i, steps):
    """The cosine schedule's length of step `i` (0-based) of `steps`: from `step_size` down towards 0."""
    return step_size * 0.5 * (1.0 + tf.cos(math.pi * tf.cast(i, step_size.dtype) / steps))


def _check_settings(eps, steps, step_size, norm, eot_samples, step_schedule):
    """Checks pgd's settings; returns (steps, the `Norm`, eot_samples, whether the schedule is cosine)."""
    norm, eot_samples = common.check_attack_settings(eps, norm, eot_samples)
    common.check_budget(step_size, "step_size")
    steps = validation.check_int(steps, "steps", minimum=1)
    cosine = _check_schedule(step_schedule) == config_lib.StepSchedule.COSINE
    return steps, norm, eot_samples, cosine


def _check_schedule(step_schedule):
    schedule = config_lib.coerce_enum(config_lib.StepSchedule, step_schedule, "step_schedule")
    if schedule == config_lib.StepSchedule.APGD:
        raise ValueError(
            "`pgd` takes step_schedule='fixed' or 'cosine'; APGD has its own step rule: call "
            "`keras_smart.attacks.apgd` (or `attacks.run` with an AttackConfig(step_schedule='apgd')). "
            f"Received: step_schedule={step_schedule!r}"
        )
    return schedule
