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

import typing

import numpy as np
import tensorflow as tf

from keras_smart import config as config_lib
from keras_smart import labels as labels_lib
from keras_smart import validation
from keras_smart.attacks import common

_LOSSES = ("ce", "dlr")


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
    steps = validation.check_int(steps, "steps", minimum=1)
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
      >>> dlr_loss(tf.constant([[3.0, 1.0, 0.0, -1.0]]), tf.constant([0])).numpy()  # -(3 - 1) / (3 - 0)
      array([-0.6666667], dtype=float32)
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
        return -(z_y - tf.reduce_max(others, axis=-1)) / (ranked[:, 0] - ranked[:, 2] + common.TINY)
    z_t = tf.gather(logits, labels_lib.ids_tensor(target, logits), batch_dims=1)
    return -(z_y - z_t) / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + common.TINY)


def _loss_fn(loss, y, target):
    """The per-example loss APGD maximises; soft label rows count as their argmax class (APGD judges by it)."""
    if loss == "dlr":
        return lambda logits: dlr_loss(logits, y, target)
    sparse_ce = tf.nn.sparse_softmax_cross_entropy_with_logits
    if target is None:
        return lambda logits: sparse_ce(labels_lib.ids_tensor(y, logits), tf.cast(logits, tf.float32))
    return lambda logits: -sparse_ce(labels_lib.ids_tensor(target, logits), tf.cast(logits, tf.float32))


def _random_start(x, eps, norm, seed):
    """The reference code's start: a random direction scaled onto the ball's surface (L-inf: max |d| = eps)."""
    axes = list(range(1, x.shape.rank))
    if norm == config_lib.Norm.LINF:
        t = common.uniform(tf.shape(x), seed, x.dtype, -1.0, 1.0)
        return eps * t / (tf.reduce_max(tf.abs(t), axis=axes, keepdims=True) + common.TINY)
    t = common.normal(tf.shape(x), seed, x.dtype)
    return eps * t / (tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True)) + common.TINY)


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
      seed: seed of the random start: None, an int (an op seed), or a stateless
        seed, an int tensor of shape [2] (the same seed, the same start; e.g.
        keyed by the optimizer step in training).
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
      >>> x_adv = apgd(lambda t: smart(t, training=False), x[:8], y[:8], eps=0.1, steps=3, seed=0)
      >>> x_adv.shape, float(tf.reduce_max(tf.abs(x_adv - x[:8]))) <= 0.1 + 1e-6
      (TensorShape([8, 28, 28, 1]), True)
    """
    steps, norm, eot_samples, momentum, rho = _check_settings(eps, steps, norm, loss, eot_samples, momentum, rho)
    seed = common.check_seed(seed)
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    eps = tf.cast(eps, x.dtype)

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
    iteration = _Iteration(project, evaluate, labels, norm, momentum, rho, steps, x.shape.rank)
    state = _start_state(x_0, eps, loss_0, grad_0, tf.equal(tf.argmax(logits_0, -1, output_type=tf.int32), labels))
    _, state = tf.while_loop(
        lambda i, state: (i < steps) & tf.reduce_any(state.robust), iteration, (tf.constant(0), state)
    )
    return tf.stop_gradient(tf.where(iteration.per_example(state.robust), state.x_best, state.x_adv))


def _check_settings(eps, steps, norm, loss, eot_samples, momentum, rho):
    """Checks apgd's settings; returns (steps, the `Norm`, eot_samples, momentum, rho)."""
    norm, eot_samples = common.check_attack_settings(eps, norm, eot_samples)
    steps = validation.check_int(steps, "steps", minimum=1)
    momentum = validation.check_real(momentum, "momentum", low=0.0, high=1.0, low_open=True)
    rho = validation.check_real(rho, "rho", low=0.0, high=1.0, low_open=True)
    if loss not in _LOSSES:
        raise ValueError(f"`loss` must be one of {_LOSSES}. Received: loss={loss!r}")
    return steps, norm, eot_samples, momentum, rho


class _State(typing.NamedTuple):
    """APGD's loop state, per example of the batch."""

    x_k: tf.Tensor  # the current iterate
    x_prev: tf.Tensor  # the iterate before it (for the momentum)
    grad: tf.Tensor  # the loss gradient at x_k
    step_size: tf.Tensor  # [batch, 1, ...]
    x_best: tf.Tensor  # the highest-loss iterate so far
    grad_best: tf.Tensor  # the gradient there
    loss_best: tf.Tensor  # its loss
    loss_prev: tf.Tensor  # the loss at x_k
    increases: tf.Tensor  # the steps since the last checkpoint whose loss rose
    reduced_last: tf.Tensor  # whether the last checkpoint halved the step size
    loss_best_last: tf.Tensor  # loss_best at the last checkpoint
    x_adv: tf.Tensor  # the first misclassified iterate
    robust: tf.Tensor  # no iterate misclassified yet

    def replace(self, **changes):
        """A copy with `changes`."""
        return self._replace(**changes)


def _start_state(x_0, eps, loss_0, grad_0, robust_0):
    """The state before the first iteration: at x_0, with steps of 2 * eps."""
    batch = tf.shape(x_0)[:1]
    return _State(
        x_k=x_0,
        x_prev=x_0,
        grad=grad_0,
        step_size=tf.fill(
            tf.concat([batch, tf.ones([x_0.shape.rank - 1], tf.int32)], 0), tf.cast(2.0, x_0.dtype) * eps
        ),
        x_best=x_0,
        grad_best=grad_0,
        loss_best=loss_0,
        loss_prev=loss_0,
        increases=tf.zeros(batch, tf.float32),
        reduced_last=tf.ones(batch, tf.bool),  # the reference counts the start as "just reduced"
        loss_best_last=loss_0,
        x_adv=x_0,
        robust=robust_0,
    )


def _checkpoint_tables(steps):
    """Per iteration (0-based): whether it ends at a checkpoint, and the length of the window it ends."""
    marks = np.zeros(steps, bool)
    windows = np.zeros(steps, np.float32)
    previous = 0
    for point in checkpoints(steps):
        marks[point - 1] = True
        windows[point - 1] = point - previous
        previous = point
    return tf.constant(marks), tf.constant(windows)


class _Iteration:
    """One APGD iteration, the `tf.while_loop` body: a momentum step, then the record of successes,
    best points and, at checkpoints, the halving of step sizes."""

    def __init__(self, project, evaluate, labels, norm, momentum, rho, steps, rank):
        self._project = project
        self._evaluate = evaluate
        self._labels = labels
        self._norm = norm
        self._momentum = momentum
        self._rho = rho
        self._shape = [-1] + [1] * (rank - 1)
        self._marks, self._windows = _checkpoint_tables(steps)

    def per_example(self, values):
        """[batch] values reshaped to broadcast against the inputs."""
        return tf.reshape(values, self._shape)

    def __call__(self, i, s):
        x_new = self._momentum_step(i, s)
        loss_new, grad_new, logits = self._evaluate(x_new)
        recorded = self._record(s, x_new, loss_new, grad_new, logits)
        state = tf.cond(
            self._marks[i],
            lambda: self._halve(i, recorded, x_new, grad_new),
            lambda: recorded.replace(x_k=x_new, grad=grad_new),
        )
        state = state.replace(x_prev=s.x_k, loss_prev=loss_new)
        return i + 1, _State(*(tf.stop_gradient(t) for t in state))

    def _momentum_step(self, i, s):
        """The next iterate: a projected step of each example's size, mixed with the last move (not at i = 0)."""
        a = tf.cast(tf.where(i > 0, self._momentum, 1.0), s.x_k.dtype)
        z = self._project(s.x_k + common.step(s.grad, s.step_size, self._norm))
        return self._project(s.x_k + a * (z - s.x_k) + (1.0 - a) * (s.x_k - s.x_prev))

    def _record(self, s, x_new, loss_new, grad_new, logits):
        """`s` with x_new recorded: as the first misclassified point, as the best point, as an increase."""
        correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), self._labels)
        broken = tf.logical_not(correct)
        x_adv = tf.where(self.per_example(broken & s.robust), x_new, s.x_adv)
        robust = s.robust & correct

        increases = s.increases + tf.cast(loss_new > s.loss_prev, tf.float32)
        improved = loss_new > s.loss_best
        x_best = tf.where(self.per_example(improved), x_new, s.x_best)
        grad_best = tf.where(self.per_example(improved), grad_new, s.grad_best)
        loss_best = tf.where(improved, loss_new, s.loss_best)
        return s.replace(
            x_best=x_best, grad_best=grad_best, loss_best=loss_best, increases=increases, x_adv=x_adv, robust=robust
        )

    def _halve(self, i, s, x_new, grad_new):
        """At a checkpoint: halve the step of the examples whose loss oscillated or stalled, and restart
        them from their best point; count the increases afresh."""
        oscillating = s.increases <= self._windows[i] * self._rho
        stalled = tf.logical_not(s.reduced_last) & (s.loss_best_last >= s.loss_best)
        reduce = oscillating | stalled
        where = self.per_example(reduce)
        return s.replace(
            step_size=tf.where(where, s.step_size / 2.0, s.step_size),
            x_k=tf.where(where, s.x_best, x_new),
            grad=tf.where(where, s.grad_best, grad_new),
            increases=tf.zeros_like(s.increases),
            reduced_last=reduce,
            loss_best_last=s.loss_best,
        )


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
      >>> x_adv = apgd_targeted(lambda t: smart(t, training=False), x[:8], y[:8], eps=0.1, steps=2,
      ...                       target_classes=2, seed=0)
      >>> x_adv.shape
      TensorShape([8, 28, 28, 1])
    """
    target_classes = validation.check_int(target_classes, "target_classes", minimum=1)
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    clean_logits = tf.cast(model_fn(x), tf.float32)
    classes = clean_logits.shape[-1]
    if classes is None:
        raise ValueError("apgd_targeted needs a static number of classes (the logits' last dimension).")
    labels = labels_lib.ids_tensor(y, clean_logits)
    ranking = tf.argsort(clean_logits, axis=-1, direction="DESCENDING", stable=True)
    runs = min(target_classes, classes - 1)

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
