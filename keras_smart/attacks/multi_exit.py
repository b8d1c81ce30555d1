"""Attacks on multi-exit networks (RDI-Nets): one exit, the average of the exits, max-average, routed.

The model callable of these attacks maps a batch to a LIST of logits, one per
exit (earliest first, the final exit last), every exit over the same classes.
Each attack is `pgd` with a loss over the exits, so the projection, random
start, step schedules and expectation over transformation are pgd's.
"""

import tensorflow as tf

from keras_smart import config as config_lib
from keras_smart import labels as labels_lib
from keras_smart import validation
from keras_smart.attacks import pgd as pgd_lib

Mode = config_lib.ExitAttack


def exit_losses(logits_list, y):
    """Per-exit, per-example cross-entropy: a float32 tensor [E, B].

    Args:
      logits_list: a list of E logits tensors [B, classes].
      y: the labels every exit is scored against (ids [B] or [B, 1], or one-hot
        / soft rows [B, classes]), or a list / tuple of E such tensors or arrays,
        one per exit.

    Returns:
      A float32 tensor [E, B].

    Raises:
      ValueError: a list of labels whose length is not the number of exits.

    Example:
      >>> logits = [tf.constant([[0.0, 0.0]]), tf.constant([[0.0, 2.0]])]
      >>> exit_losses(logits, tf.constant([1])).numpy().round(4)  # log 2, log(1 + e^-2)
      array([[0.6931],
             [0.1269]], dtype=float32)
    """
    logits_list = list(logits_list)
    labels = per_exit_labels(y, len(logits_list))
    return tf.stack(
        [tf.cast(labels_lib.cross_entropy(l, tf.cast(z, tf.float32)), tf.float32) for l, z in zip(labels, logits_list)]
    )


def per_exit_labels(y, count):
    """`y` as a list of `count` label tensors: one label array for every exit, or already one per exit."""
    if isinstance(y, (list, tuple)) and y and all(_is_label_array(t) for t in y):
        if len(y) != count:
            raise ValueError(
                f"`y` holds {len(y)} label arrays for a model with {count} exits: pass one label array (every exit "
                "learns the same labels) or one per exit."
            )
        return [tf.convert_to_tensor(t) for t in y]
    return [tf.convert_to_tensor(y)] * count


def _is_label_array(value):
    """A tensor or array of rank >= 1 (a list of them is one label array per exit; a list of numbers is labels)."""
    shape = getattr(value, "shape", None)
    if shape is None or isinstance(value, (list, tuple)):
        return False
    rank = tf.TensorShape(shape).rank
    return rank is None or rank >= 1


def entropy(logits):
    """Per-example entropy (natural log) of softmax(logits), float32 [B].

    Example:
      >>> entropy(tf.constant([[0.0, 0.0], [50.0, 0.0]])).numpy().round(4)  # log 2, ~0
      array([0.6931, 0.    ], dtype=float32)
    """
    log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)


def multi_exit_pgd(
    model_fn,
    x,
    y,
    *,
    mode,
    eps,
    steps,
    step_size,
    exit_index=None,
    route_fn=None,
    target_exit=None,
    norm="linf",
    random_start=True,
    clip_min=0.0,
    clip_max=1.0,
    seed=None,
    eot_samples=1,
    step_schedule="fixed",
):
    """PGD on a multi-exit network: against one exit, the exits' average, the worst of per-exit runs, or routed.

    Modes (RDI-Nets' attacks, plus the routed one):
    - "single": ascend the cross-entropy (CE) of exit `exit_index`.
    - "average": ascend the mean CE over the exits.
    - "max_average": one "single" PGD per exit (each with `seed`); per example
      keep the candidate with the largest CE summed over ALL exits.
    - "adaptive": at every step, ascend the CE of the exit that
      `route_fn(logits at the current x_adv)` picks, per example (the exit the
      input would leave at). With `target_exit=k` the loss is instead
      CE_k - H_k + sum_{j<k} H_j (H: softmax entropy): earlier exits are pushed
      to be unsure, so that an entropy policy lets the input pass them, and exit
      k to be confident and wrong, so that the input leaves there misclassified
      (`route_fn` is not needed then, and unused).

    Everything runs in-graph (`pgd`'s `tf.while_loop`), also inside `tf.function`.

    Args:
      model_fn: a callable mapping a batch to a list of E logits tensors
        [B, classes] (earliest exit first), e.g. `lambda t: model(t, training=False)`.
      x: a batch of inputs.
      y: labels (ids [B] or [B, 1], or one-hot rows), or a list of E label
        arrays, one per exit (see `exit_losses`).
      mode: "single", "average", "max_average" or "adaptive" (`ExitAttack`).
      eps, steps, step_size, norm, random_start, clip_min, clip_max, seed,
        eot_samples, step_schedule: as in `keras_smart.attacks.pgd`. seed: None,
        an int (an op seed), or a stateless seed, an int tensor of shape [2].
      exit_index: the exit of "single" (Python indexing: -1 is the final exit).
      route_fn: for "adaptive": `route_fn(logits_list)` -> int32 exit ids [B].
      target_exit: for "adaptive": the exit to make the input leave at, wrongly.

    Returns:
      The adversarial batch (no gradient flows back through it).

    Raises:
      ValueError / TypeError: an unknown mode, "single" without `exit_index`,
        "adaptive" with neither `route_fn` nor `target_exit`, an option another
        mode uses, an exit out of range (when the model is first called), and
        everything `pgd` refuses.

    Example:
      >>> model_fn = lambda t: [t[:, :2] - t[:, 2:], t[:, :2]]  # two exits, two classes
      >>> x_toy = tf.constant([[0.5, 0.5, 0.4, 0.4]])
      >>> x_adv = multi_exit_pgd(model_fn, x_toy, tf.constant([0]), mode="max_average", eps=0.1, steps=2,
      ...                        step_size=0.05, random_start=False)
      >>> float(tf.reduce_max(tf.abs(x_adv - x_toy))) <= 0.1 + 1e-6
      True
    """
    loss = _mode_loss(mode, exit_index, route_fn, target_exit)
    settings = dict(
        eps=eps, steps=steps, step_size=step_size, norm=norm, random_start=random_start, clip_min=clip_min,
        clip_max=clip_max, seed=seed, eot_samples=eot_samples, step_schedule=step_schedule,
    )
    if loss is None:
        return _max_average(model_fn, x, y, settings)
    return _pgd_on(model_fn, x, y, loss, settings)


def _mode_loss(mode, exit_index, route_fn, target_exit):
    """The attack loss of `mode`, `loss(logits_list, y)` -> [B]; None for "max_average". Checks the options."""
    mode = config_lib.coerce_enum(Mode, mode, "mode")
    given = {"exit_index": exit_index, "route_fn": route_fn, "target_exit": target_exit}
    uses = {Mode.SINGLE: {"exit_index"}, Mode.ADAPTIVE: {"route_fn", "target_exit"}}.get(mode, set())
    stray = sorted(name for name, value in given.items() if value is not None and name not in uses)
    if stray:
        names = ", ".join(f"`{name}`" for name in stray)
        raise ValueError(f"mode={mode.value!r} takes no {names}. Received: {stray[0]}={given[stray[0]]!r}")
    if mode == Mode.SINGLE:
        if exit_index is None:
            raise ValueError("mode='single' attacks one exit: pass `exit_index` (e.g. -1 for the final exit).")
        return _single_loss(validation.check_int(exit_index, "exit_index"))
    if mode == Mode.AVERAGE:
        return lambda logits_list, labels: tf.reduce_mean(exit_losses(logits_list, labels), axis=0)
    if mode == Mode.MAX_AVERAGE:
        return None
    if target_exit is not None:
        return _leave_at_loss(validation.check_int(target_exit, "target_exit"))
    if not callable(route_fn):
        raise ValueError(
            "mode='adaptive' attacks the exit each input leaves at: pass `route_fn` (logits_list -> int32 exit ids "
            f"[B], e.g. an ExitPolicy's `route`), or `target_exit`. Received: route_fn={route_fn!r}"
        )
    return _routed_loss(route_fn)


def _exit(index, count, name):
    """`index` as a non-negative exit number of `count`; ValueError out of range."""
    if not -count <= index < count:
        raise ValueError(f"`{name}` must be in [-{count}, {count}) for a model with {count} exits. Received: {name}={index}")
    return index % count


def _single_loss(exit_index):
    def loss(logits_list, labels):
        k = _exit(exit_index, len(logits_list), "exit_index")
        return exit_losses(logits_list, labels)[k]

    return loss


def _routed_loss(route_fn):
    def loss(logits_list, labels):
        route = tf.cast(route_fn(list(logits_list)), tf.int32)
        return tf.gather(tf.transpose(exit_losses(logits_list, labels)), route[:, None], batch_dims=1)[:, 0]

    return loss


def _leave_at_loss(target_exit):
    def loss(logits_list, labels):
        k = _exit(target_exit, len(logits_list), "target_exit")
        total = exit_losses(logits_list, labels)[k] - entropy(logits_list[k])
        for earlier in logits_list[:k]:
            total += entropy(earlier)
        return total

    return loss


def _pgd_on(model_fn, x, y, loss, settings, on_exits=None):
    """`pgd` whose model is `model_fn`'s exits stacked [E, B, classes] and whose loss is `loss(logits_list, y)`.

    `on_exits(count)` is called with the number of exits when the model is first
    called (at trace time inside `tf.function`).
    """

    def stacked(t):
        logits_list = model_fn(t)
        if not isinstance(logits_list, (list, tuple)) or not logits_list:
            raise TypeError(
                "A multi-exit attack's `model_fn` must return a list of logits tensors, one per exit. "
                f"Received: {type(logits_list).__name__}"
            )
        if on_exits is not None:
            on_exits(len(logits_list))
        return tf.stack([tf.cast(z, tf.float32) for z in logits_list])

    # pgd only hands its labels to the loss: the labels (one array, or one per exit) reach it through the closure.
    return pgd_lib.pgd(stacked, x, tf.zeros([0]), loss_fn=lambda _, z: loss(tf.unstack(z), y), **settings)


def _max_average(model_fn, x, y, settings):
    """One single-exit PGD per exit; per example, the candidate with the largest CE summed over all exits."""
    count = []
    candidates = [_pgd_on(model_fn, x, y, _single_loss(0), settings, on_exits=count.append)]
    # The first run called the model (traced it, inside tf.function): now the number of exits is known.
    candidates += [_pgd_on(model_fn, x, y, _single_loss(k), settings) for k in range(1, count[0])]
    totals = tf.stack([tf.reduce_sum(exit_losses(model_fn(c), y), axis=0) for c in candidates])  # [E, B]
    best = tf.argmax(totals, axis=0, output_type=tf.int32)
    return tf.stop_gradient(tf.gather(tf.stack(candidates, axis=1), best, batch_dims=1))


def run_multi_exit(config, model_fn, x, y, *, mode, eps=None, seed=None, eot_samples=1, **mode_args):
    """Runs the multi-exit attack `mode` with an `AttackConfig`'s settings (see `multi_exit_pgd`).

    PGD with the "fixed" or "cosine" schedule maps one to one; FGSM is one step
    of size eps from x (no random start). APGD's step rule is not available for
    multi-exit attacks.

    Args:
      config: a `keras_smart.AttackConfig`.
      model_fn: a callable mapping a batch to a list of logits, one per exit.
      x, y: a batch and its labels (or one label array per exit).
      mode: "single", "average", "max_average" or "adaptive".
      eps: overrides `config.eps` (e.g. a scheduled tf.Variable); the step size scales with it.
      seed: seed of the random start: None, an int, or a stateless seed, an int
        tensor of shape [2] (see `multi_exit_pgd`).
      eot_samples: as in `multi_exit_pgd`.
      **mode_args: `exit_index`, `route_fn` or `target_exit`, as the mode needs.

    Raises:
      ValueError: config.step_schedule == "apgd", and what `multi_exit_pgd` refuses.

    Example:
      >>> model_fn = lambda t: [t[:, :2] - t[:, 2:], t[:, :2]]  # two exits, two classes
      >>> config = keras_smart.AttackConfig(kind="fgsm", eps=0.1)
      >>> run_multi_exit(config, model_fn, tf.constant([[0.5, 0.5, 0.4, 0.4]]), tf.constant([0]), mode="average").numpy()
      array([[0.4, 0.6, 0.5, 0.3]], dtype=float32)
    """
    if config.step_schedule == config_lib.StepSchedule.APGD:
        raise ValueError(
            "Multi-exit attacks run PGD: use an AttackConfig with step_schedule='fixed' or 'cosine' "
            "(or kind='fgsm'). Received: step_schedule='apgd'"
        )
    budget = config.eps if eps is None else eps
    if config.kind == config_lib.AttackKind.FGSM:
        steps, step_size, random_start = 1, budget, False
    else:
        steps, random_start = config.steps, config.random_start
        step_size = config.step_size if eps is None else config.step_size * budget / config.eps
    return multi_exit_pgd(
        model_fn, x, y, mode=mode, eps=budget, steps=steps, step_size=step_size, norm=config.norm.value,
        random_start=random_start, clip_min=config.clip_min, clip_max=config.clip_max, seed=seed,
        eot_samples=eot_samples, step_schedule=config.step_schedule.value, **mode_args,
    )
