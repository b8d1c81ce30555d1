"""Training a multi-exit SmartModel: one label array for every exit, metrics per exit, the per-exit attack.

A multi-exit model (`keras_smart.exits.attach`, or any Functional model whose
outputs are logits over the same classes) has one output per exit, earliest
first, the final exit last. Every exit learns the same labels, so users pass
ONE label array (ids [N], [N, 1] or one-hot rows) to `fit` and `evaluate`; the
SmartModel gives each output its copy (a list with one array per output, as
Keras allows, works too). On a multi-output SmartModel a flat list of metrics,
`compile(..., metrics=["accuracy"])`, applies to every output in both Keras
flavours (tf_keras's rule; Keras 3 alone reads a flat list as one metric per
output and refuses other lengths): the logs then show
"<output name>_accuracy" per exit, e.g. "exit_1_accuracy", ..., and
"<output name>_loss" per exit next to the total "loss".
"""

import inspect

import tensorflow as tf

from keras_smart import _compat
from keras_smart import attacks
from keras_smart import config as config_lib
from keras_smart import inputs as inputs_lib

keras = _compat.keras


def output_count(model):
    """The number of outputs of a Functional model (1 when it has none yet)."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    return len(outputs) if outputs else 1


def labels_per_output(model, y):
    """`y` as a list with one label tensor per output: one array for every exit, a list / tuple, or a dict by name.

    Raises:
      ValueError: a list of the wrong length, or a dict whose keys are not the output names.
    """
    count = output_count(model)
    if isinstance(y, dict):
        names = list(model.output_names)
        if sorted(y) != sorted(names):
            raise ValueError(f"`y` as a dict must have one entry per output, {names}. Received keys: {sorted(y)}")
        return [y[name] for name in names]
    if isinstance(y, (list, tuple)):
        if len(y) != count:
            raise ValueError(
                f"`y` holds {len(y)} label arrays for a model with {count} outputs: pass one label array (every "
                "exit learns the same labels) or one per output."
            )
        return list(y)
    return [y] * count


def conform_labels(model, y):
    """`y` as Keras's loss and metrics expect it: a single label array repeated per output of a multi-output model.

    Anything else (one output, no labels, a list or dict of labels) is returned as it is.
    """
    if y is None or output_count(model) == 1 or tf.nest.is_nested(y):
        return y
    return labels_per_output(model, y)


def _copy_metric(metric):
    if isinstance(metric, keras.metrics.Metric):
        return metric.__class__.from_config(metric.get_config())
    return metric  # a name or a function: Keras makes one metric object per output from it


def broadcast_metrics(model, args, kwargs):
    """`compile`'s arguments with a flat list of (weighted) metrics repeated for each output of a multi-output model.

    Keras 3 only: tf_keras already applies a flat list to every output (and
    copies metric objects). Metric objects are copied, so each output has its own.
    """
    count = output_count(model)
    if _compat.IS_LEGACY or count == 1:
        return args, kwargs
    bound = inspect.signature(keras.Model.compile).bind(model, *args, **kwargs)
    for name in ("metrics", "weighted_metrics"):
        metrics = bound.arguments.get(name)
        if metrics is not None and not tf.nest.is_nested(metrics):
            metrics = [metrics]  # one metric ("accuracy"): tf_keras applies it to every output too
        if isinstance(metrics, (list, tuple)) and not any(tf.nest.is_nested(m) for m in metrics):
            bound.arguments[name] = [[_copy_metric(m) for m in metrics] for _ in range(count)]
    return bound.args[1:], bound.kwargs


def check_outputs(model, adversarial_config):
    """Raises unless adversarial training can run: one input, and one output or several of one shape.

    For several outputs (a multi-exit model) also the attack's step rule (PGD
    or FGSM) and `exit_index`'s range.
    """
    count = inputs_lib.check_exits_io(model, "Adversarial training")
    if count == 1:
        return
    if adversarial_config.attack.step_schedule == config_lib.StepSchedule.APGD:
        raise ValueError(
            f"'{model.name}' has {count} exits: multi-exit adversarial training attacks with PGD or FGSM. Use an "
            "AttackConfig with step_schedule='fixed' or 'cosine'. Received: step_schedule='apgd'"
        )
    index = adversarial_config.exit_index
    if adversarial_config.exit_attack == config_lib.ExitAttack.SINGLE and not -count <= index < count:
        raise ValueError(
            f"`exit_index` must be in [-{count}, {count}) for '{model.name}', which has {count} exits. "
            f"Received: exit_index={index}"
        )


def run_attack(attack, model_fn, x, y, *, exits, exit_attack, exit_index, eps=None, seed=None):
    """x_adv from `attack` (an AttackConfig): `attacks.run` for one output, the multi-exit attack for several.

    Args:
      attack: a `keras_smart.AttackConfig`.
      model_fn: maps a batch to the model's output: logits, or (`exits` > 1) a
        list of logits, one per exit.
      x, y: the batch and its labels (for several exits: one label array, or one per exit).
      exits: the number of outputs.
      exit_attack, exit_index: the multi-exit attack (`AdversarialConfig`'s fields).
      eps: overrides `attack.eps`.
      seed: seed of the random start: None, an int, or a stateless seed, an int
        tensor of shape [2] (see `keras_smart.attacks.pgd`).
    """
    if exits == 1:
        return attacks.run(attack, model_fn, x, y, eps=eps, seed=seed)
    mode = config_lib.coerce_enum(config_lib.ExitAttack, exit_attack, "exit_attack")
    mode_args = {"exit_index": exit_index} if mode == config_lib.ExitAttack.SINGLE else {}
    return attacks.run_multi_exit(attack, model_fn, x, y, mode=mode, eps=eps, seed=seed, **mode_args)
