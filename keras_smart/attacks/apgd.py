"""Auto-PGD (Croce & Hein 2020): step-size-free PGD with momentum, CE and targeted DLR losses, in-graph.

APGD is the gradient half of AutoAttack. Each run starts at a random point of
the eps-ball, takes a first step of size 2*eps, then momentum steps
(alpha = 0.75) and halves the step size of an example at checkpoints
w_j = ceil(p_j * steps) (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06))
when, since the last checkpoint, its loss rose in at most rho = 75% of the steps,
or its step size was not halved last time and its best loss did not improve;
a halved example restarts from its best point. The loop follows the authors'
reference code (`autoattack/autopgd_base.py`) and is a `tf.while_loop`, so the
model is traced once whatever `steps` is.
"""

import numbers

import numpy as np
import tensorflow as tf

from keras_smart import labels as labels_lib
from keras_smart.attacks import common

_LOSSES = ("ce", "dlr")
_TINY = 1e-12


def checkpoints(steps):
    """The iterations (1-based) after which APGD may halve a step size.

    The reference code's integer windows: a first window of int(0.22 * steps)
    iterations, each next one int(0.03 * steps) shorter, never shorter than
    int(0.06 * steps) (each at least 1). For 100 steps these are the paper's
    ceil(p_j * 100).

    Example:
      >>> checkpoints(100)
      [22, 41, 57, 70, 80, 87, 93, 99]
    """
    steps = common.check_steps(steps)
    window = max(int(0.22 * steps), 1)
    shrink = max(int(0.03 * steps), 1)
    shortest = max(int(0.06 * steps), 1)
    points, at = [], 0
    while at + window <= steps:
        at += window
        points.append(at)
        window = max(window - shrink, shortest)
    return points


def dlr_loss(logits, y, target=None):
    """The difference-of-logits-ratio loss (Croce & Hein 2020), per example; APGD maximises it.

    Untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3);
    targeted:   -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2),
    with z_pi1 >= z_pi2 >= ... the sorted logits. Invariant to shifting and
    scaling the logits, so a model cannot hide behind large logits.

    Args:
      logits: [batch, classes] logits (>= 3 classes; >= 4 when targeted).
      y: true labels: integer ids [batch] or [batch, 1], or one-hot / soft rows
        (read by `keras_smart.labels.ids_tensor`).
      target: None, or target labels, in the same forms.

    Returns:
      A [batch] float32 tensor.

    Raises:
      ValueError: too few classes for the (targeted) DLR loss; labels of a
        shape `keras_smart.labels` refuses.

    Example:
      >>> dlr_loss(tf.constant([[3.0, 1.0, 0.0, -1.0]]), tf.constant([0]))
    """
    logits = tf.cast(logits, tf.float32)
    classes = logits.shape[-1]
    needed = 3 if target is None else 4
    if classes is not None and classes < needed:
        raise ValueError(
            f"The {'targeted ' if target is not None else ''}DLR loss needs at least {needed} classes; the "
            f"model outputs {classes}. Use the cross-entropy loss (loss='ce') instead."
        )
    y = labels_lib.ids_tensor(y, logits)
    ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
    z_y = tf.gather(logits, y, batch_dims=1)
    if target is None:
        others = tf.where(tf.one_hot(y, tf.shape(logits)[-1]) > 0, tf.float32.min, logits)
        return -(z_y - tf.reduce_max(others, axis=-1)) / (ranked[:, 0] - ranked[:, 2] + _TINY)
    z_t = tf.gather(logits, labels_lib.ids_tensor(target, logits), batch_dims=1)
    return -(z_y - z_t) / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + _TINY)


def _loss_fn(loss, y, target):
    """The per-example loss APGD maximises; soft label rows count as their argmax class (APGD judges by it)."""
    if loss == "dlr":
        return lambda logits: dlr_loss(logits, y, target)
    sparse_ce = tf.nn.sparse_softmax_cross_entropy_with_logits
    if target is None:
        return lambda logits: sparse_ce(labels_lib.ids_tensor(y, logits), tf.cast(logits, tf.float32))
    return lambda logits: -sparse_ce(labels_lib.ids_tensor(target, logits), tf.cast(logits, tf.float32))


def _check_fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value <= 1.0:
        raise ValueError(f"`{name}` must be a number in (0, 1]. Received: {name}={value!r}")
    return float(value)


def _random_start(x, eps, norm, seed):
    """The reference code's start: a random direction scaled onto the ball's surface (L-inf: max |d| = eps)."""
    axes = list(range(1, x.shape.rank))
    if norm == common.config_lib.Norm.LINF:
        t = tf.random.uniform(tf.shape(x), -1.0, 1.0, dtype=x.dtype, seed=seed)
        return eps * t / (tf.reduce_max(tf.abs(t), axis=axes, keepdims=True) + _TINY)
    t = tf.random.normal(tf.shape(x), dtype=x.dtype, seed=seed)
    return eps * t / (tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True)) + _TINY)


def apgd(
    model_fn,
    x,
    y,
    *,
    eps,
    steps=100,
    norm="linf",
    loss="ce",
    target=None,
    random_start=True,
    clip_min=0.0,
    clip_max=1.0,
    seed=None,
    eot_samples=1,
    momentum=0.75,
    rho=0.75,
):
    """One run of APGD (Croce & Hein 2020) on a batch: an in-graph loop, usable inside `tf.function`.

    Success is always judged against the true labels `y`, as in AutoAttack: the
    result holds, per example, the first iterate found misclassified, or else
    the iterate with the highest loss.

    Args:
      model_fn: a callable mapping a batch of inputs to logits.
      x: a batch of inputs.
      y: true labels: integer ids [batch] or [batch, 1], or one-hot / soft rows
        (soft rows count as their argmax class; see `keras_smart.labels`).
      eps: the budget (> 0).
      steps: iterations (int >= 1); AutoAttack uses 100. Each costs one forward
        and one backward pass (times `eot_samples`), plus one for the start.
      norm: "linf" or "l2".
      loss: "ce" (cross-entropy) or "dlr" (difference of logits ratio).
      target: None (untargeted: maximise the loss of `y`), or target labels in
        the forms `y` takes (targeted: "ce" maximises -CE(target), "dlr" the targeted DLR).
      random_start: start from a random point on the eps-ball's surface.
      clip_min, clip_max: the valid input range.
      seed: seed of the random start.
      eot_samples: forward passes each loss and gradient averages over (expectation
        over transformation, for randomised models).
      momentum: alpha, the weight of the new step (0.75; 1 disables momentum).
      rho: the share of increasing steps below which a checkpoint halves the step (0.75).

    Returns:
      The adversarial batch, inside the eps-ball and the clip range.

    Raises:
      ValueError / TypeError: bad eps, steps, norm, loss, eot_samples, momentum or
        rho; too few classes for the DLR loss; labels of a shape `keras_smart.labels`
        refuses (e.g. rank 3, or rows whose width is not the class count).

    Example:
      >>> x_adv = apgd(lambda t: model(t, training=False), x, y, eps=8 / 255, steps=100)
    """
    common.check_positive(eps, "eps")
    steps = common.check_steps(steps)
    norm = common.check_norm(norm)
    eot_samples = common.check_eot_samples(eot_samples)
    momentum = _check_fraction(momentum, "momentum")
    rho = _check_fraction(rho, "rho")
    if loss not in _LOSSES:
        raise ValueError(f"`loss` must be one of {_LOSSES}. Received: loss={loss!r}")

    x = tf.stop_gradient(tf.convert_to_tensor(x))
    eps = tf.cast(eps, x.dtype)
    shape = [-1] + [1] * (x.shape.rank - 1)

    def project(v):
        return common.clip(x + common.project(v - x, eps, norm), clip_min, clip_max)

    x_0 = project(x + _random_start(x, eps, norm, seed)) if random_start else x
    y = tf.convert_to_tensor(y)
    target = None if target is None else tf.convert_to_tensor(target)
    # The losses read the labels against each call's logits (the class count is known only there).
    loss_fn = _loss_fn(loss, y, target)

    def evaluate(x_at):
        return common.loss_and_gradient(model_fn, x_at, loss_fn, eot_samples)

    loss_0, grad_0, logits_0 = evaluate(x_0)
    labels = labels_lib.ids_tensor(y, logits_0)
    robust_0 = tf.equal(tf.argmax(logits_0, -1, output_type=tf.int32), labels)

    marks = np.zeros(steps, bool)
    windows = np.zeros(steps, np.float32)
    previous = 0
    for point in checkpoints(steps):
        marks[point - 1] = True
        windows[point - 1] = point - previous
        previous = point
    marks = tf.constant(marks)
    windows = tf.constant(windows)

    def body(i, state):
        (x_k, x_prev, grad, step_size, x_best, grad_best, loss_best, loss_prev, increases,
         reduced_last, loss_best_last, x_adv, robust) = state
        a = tf.cast(tf.where(i > 0, momentum, 1.0), x.dtype)
        z = project(x_k + common.step(grad, step_size, norm))
        x_new = project(x_k + a * (z - x_k) + (1.0 - a) * (x_k - x_prev))
        loss_new, grad_new, logits = evaluate(x_new)

        correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
        broken = tf.logical_not(correct)
        x_adv = tf.where(tf.reshape(broken & robust, shape), x_new, x_adv)
        robust = robust & correct

        increases = increases + tf.cast(loss_new > loss_prev, tf.float32)
        improved = loss_new > loss_best
        x_best = tf.where(tf.reshape(improved, shape), x_new, x_best)
        grad_best = tf.where(tf.reshape(improved, shape), grad_new, grad_best)
        loss_best = tf.where(improved, loss_new, loss_best)

        def halve():
            oscillating = increases <= windows[i] * rho
            stalled = tf.logical_not(reduced_last) & (loss_best_last >= loss_best)
            reduce = oscillating | stalled
            where = tf.reshape(reduce, shape)
            return (
                tf.where(where, step_size / 2.0, step_size),
                tf.where(where, x_best, x_new),
                tf.where(where, grad_best, grad_new),
                tf.zeros_like(increases),
                reduce,
                loss_best,
            )

        def keep():
            return step_size, x_new, grad_new, increases, reduced_last, loss_best_last

        step_size, x_next, grad_next, increases, reduced_last, loss_best_last = tf.cond(marks[i], halve, keep)
        state = (x_next, x_k, grad_next, step_size, x_best, grad_best, loss_best, loss_new, increases,
                 reduced_last, loss_best_last, x_adv, robust)
        return i + 1, tuple(tf.stop_gradient(t) for t in state)

    batch = tf.shape(x)[:1]
    state = (
        x_0,
        x_0,
        grad_0,
        tf.fill(tf.concat([batch, tf.ones([x.shape.rank - 1], tf.int32)], 0), tf.cast(2.0, x.dtype) * eps),
        x_0,
        grad_0,
        loss_0,
        loss_0,
        tf.zeros(batch, tf.float32),
        tf.ones(batch, tf.bool),  # the reference counts the start as "just reduced"
        loss_0,
        x_0,
        robust_0,
    )
    _, state = tf.while_loop(
        lambda i, state: (i < steps) & tf.reduce_any(state[-1]),
        body,
        (tf.constant(0), state),
    )
    x_best, x_adv, robust = state[4], state[-2], state[-1]
    return tf.stop_gradient(tf.where(tf.reshape(robust, shape), x_best, x_adv))


def apgd_targeted(
    model_fn,
    x,
    y,
    *,
    eps,
    steps=100,
    target_classes=9,
    loss="dlr",
    norm="linf",
    random_start=True,
    clip_min=0.0,
    clip_max=1.0,
    seed=None,
    eot_samples=1,
):
    """APGD-T (AutoAttack's targeted APGD): one targeted run per target class, best result kept.

    The targets of an example are its 2nd, 3rd, ... highest-scoring classes on
    the clean input (at most `target_classes`, and at most classes - 1). Each
    run attacks only the examples no earlier run has broken (the result of a
    later run is used only where it succeeds).

    Args:
      model_fn, x, y, eps, steps, norm, random_start, clip_min, clip_max, seed,
        eot_samples: as in `apgd`.
      target_classes: how many top-ranked wrong classes to target (AutoAttack: 9).
      loss: "dlr" (AutoAttack's targeted DLR) or "ce".

    Returns:
      The adversarial batch.

    Example:
      >>> x_adv = apgd_targeted(lambda t: model(t, training=False), x, y, eps=0.3, steps=100)
    """
    if isinstance(target_classes, bool) or not isinstance(target_classes, numbers.Integral) or target_classes < 1:
        raise ValueError(f"`target_classes` must be an int >= 1. Received: target_classes={target_classes!r}")
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    clean_logits = tf.cast(model_fn(x), tf.float32)
    classes = clean_logits.shape[-1]
    if classes is None:
        raise ValueError("apgd_targeted needs a static number of classes (the logits' last dimension).")
    labels = labels_lib.ids_tensor(y, clean_logits)
    ranking = tf.argsort(clean_logits, axis=-1, direction="DESCENDING", stable=True)
    runs = min(int(target_classes), classes - 1)

    def attack_survivors(rank, x_adv, robust):
        # Only the examples no earlier target has broken.
        index = tf.where(robust)[:, 0]
        candidate = apgd(
            model_fn, tf.gather(x, index), tf.gather(labels, index), eps=eps, steps=steps, norm=norm,
            loss=loss, target=tf.gather(tf.gather(ranking, rank, axis=1), index), random_start=random_start,
            clip_min=clip_min, clip_max=clip_max, seed=seed, eot_samples=eot_samples,
        )
        predicted = tf.argmax(tf.cast(model_fn(candidate), tf.float32), -1, output_type=tf.int32)
        still = tf.equal(predicted, tf.gather(labels, index))
        return (
            tf.tensor_scatter_nd_update(x_adv, index[:, None], candidate),
            tf.tensor_scatter_nd_update(robust, index[:, None], still),
        )

    def body(rank, x_adv, robust):
        # An empty batch is skipped: TF's CPU convolution mis-shapes a batch of 0.
        x_adv, robust = tf.cond(
            tf.reduce_any(robust), lambda: attack_survivors(rank, x_adv, robust), lambda: (x_adv, robust)
        )
        return rank + 1, x_adv, robust

    # One loop over the target ranks: the model is traced once, not once per target.
    _, x_adv, _ = tf.while_loop(
        lambda rank, *_: rank <= runs, body, (tf.constant(1), x, tf.ones(tf.shape(labels), tf.bool))
    )
    return tf.stop_gradient(x_adv)
