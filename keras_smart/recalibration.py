"""Batch-norm post-statistics: each path's moving statistics recomputed from the inputs it serves."""

import warnings

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart import inputs
from keras_smart import multi_exit_training as exit_training
from keras_smart import validation
from keras_smart.layers import base
from keras_smart.layers import dual_batch_norm

keras = _compat.keras


class _Collector:
    """Per dual batch-norm layer: the example-weighted sums of batch means and mean squares."""

    def __init__(self, layers):
        self._sums = {
            id(layer): (
                tf.Variable(tf.zeros(layer.moving_mean.shape), trainable=False),
                tf.Variable(tf.zeros(layer.moving_mean.shape), trainable=False),
                tf.Variable(0.0, trainable=False),
            )
            for layer in layers
        }

    def reset(self):
        for variables in self._sums.values():
            for variable in variables:
                variable.assign(tf.zeros_like(variable))

    def add(self, layer, mean, mean_of_squares, count):
        total_mean, total_squares, total_count = self._sums[id(layer)]
        total_mean.assign_add(mean * count)
        total_squares.assign_add(mean_of_squares * count)
        total_count.assign_add(count)

    def statistics(self, layer):
        """(mean, variance) over every value `layer` normalised since the last reset."""
        total_mean, total_squares, total_count = (v.numpy() for v in self._sums[id(layer)])
        if total_count == 0:
            raise ValueError(f"Batch-norm layer '{layer.name}' saw no input while recalibrating.")
        mean = total_mean / total_count
        return mean, np.maximum(total_squares / total_count - np.square(mean), 0.0)


def _dual_batch_norm_layers(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`recalibrate_batchnorm` expects a SmartModel. Received: {type(model).__name__}")
    layers = [
        l
        for l in _compat.flatten_layers(model)
        if isinstance(l, dual_batch_norm.DualBatchNormalization) and l.trainable
    ]
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no trainable dual batch-norm layers: nothing to recalibrate. "
            "`recalibrate_batchnorm` serves models that keras_smart.convert made from a model with "
            "BatchNormalization layers."
        )
    return layers


def _check_tradeoffs(tradeoffs):
    tradeoffs = validation.check_tradeoffs(tradeoffs)
    if len([t for t in tradeoffs if t > 0.0]) > 1:
        raise ValueError(
            "`tradeoffs` names the statistics to recompute: at most one 0 (the clean path's) and at most one "
            "value > 0 (the adversarial path's, shared by every lam > 0; its kernels are taken at that lam). "
            f"Received: tradeoffs={tuple(tradeoffs)}"
        )
    return tradeoffs


def _check_attack(attack, model, tradeoffs):
    if not any(t > 0.0 for t in tradeoffs):
        return None
    if attack is None:
        adversarial = getattr(model, "adversarial_config", None)
        if adversarial is None:
            raise ValueError(
                "Recalibrating the adversarial path (a trade-off > 0) needs `attack`: the AttackConfig whose "
                "examples that path serves (usually the training attack). Or pass tradeoffs=(0.0,) to "
                "recalibrate only the clean path."
            )
        return adversarial.attack
    if not isinstance(attack, config_lib.AttackConfig):
        raise TypeError(f"`attack` must be a keras_smart.AttackConfig. Received: {type(attack).__name__}")
    return attack


def _check_exit_attack(model, exit_attack, exit_index):
    """(exit_attack, exit_index): as given, else the model's adversarial training's, else max_average and -1."""
    adversarial = getattr(model, "adversarial_config", None)
    if exit_attack is None:
        exit_attack = adversarial.exit_attack if adversarial is not None else config_lib.ExitAttack.MAX_AVERAGE
    if exit_index is None:
        exit_index = adversarial.exit_index if adversarial is not None else -1
    exit_attack = config_lib.coerce_enum(config_lib.ExitAttack, exit_attack, "exit_attack")
    return exit_attack, validation.check_int(exit_index, "exit_index")


def recalibrate_batchnorm(
    model, data, *, tradeoffs=(0.0, 1.0), attack=None, batch_size=128, max_batches=16, exit_attack=None, exit_index=None
):
    """Recomputes each path's batch-norm moving statistics exactly from a few batches; weights frozen.

    Once-for-all and slimmable networks' "post-statistics" step, made
    attack-aware: the clean statistics (lam = 0) come from clean `data`, the
    adversarial ones (every lam > 0 shares them) from adversarial examples of
    `data` made by `attack` through the adversarial path. Each statistic is the
    exact mean and (biased) variance over every value the layer normalises,
    pooled over the batches, with the layers upstream normalising by batch
    statistics, as in training. Only moving statistics change; dropout and
    other training-only behaviour stay off. Adversarial examples are made
    with the statistics as they were before the call.

    Use it after anything that changes what a batch-norm layer sees: short
    runs (Keras's default momentum 0.99 leaves the moving statistics far
    behind the weights), new masks (`design_masks`), pruning.
    `AdversarialCallback` runs it at the end of an adversarial `fit` by
    default. Cost: `max_batches` forward passes per path, plus the attack's
    for the adversarial path. Dual batch-norm layers frozen with
    `trainable=False` keep their statistics, as Keras's training would.

    Args:
      model: a SmartModel with dual batch-norm layers (any method).
      data: (x, y) arrays or a tf.data.Dataset of (x, y[, sample_weight])
        batches; labels as integer ids ([N] or [N, 1]) or one-hot rows.
      tradeoffs: the paths to recompute, as trade-off values: 0 for the clean
        path, one value > 0 for the adversarial path (its kernels are taken
        at that lam, which matters in blend and noise modes).
      attack: the `AttackConfig` whose examples the adversarial path serves;
        default: the model's adversarial training attack, when enabled.
      batch_size: rows per batch when `data` holds arrays.
      max_batches: the most batches used.
      exit_attack, exit_index: for a multi-exit model (several outputs), the
        multi-exit attack that makes the adversarial examples (see
        `AdversarialConfig`); default: the model's adversarial training's when
        enabled, else "max_average". One-output models ignore them.

    Returns:
      {trade-off: the number of examples its statistics came from}.

    Raises:
      TypeError / ValueError: a model without dual batch-norm, bad
        `tradeoffs`, a missing `attack` for lam > 0, bad or empty `data`.

    Example:
      >>> keras_smart.recalibrate_batchnorm(smart, (x, y), attack=keras_smart.AttackConfig(eps=0.3, steps=2))
      {0.0: 64, 1.0: 64}
    """
    layers = _dual_batch_norm_layers(model)
    tradeoffs = _check_tradeoffs(tradeoffs)
    attack = _check_attack(attack, model, tradeoffs)
    exit_attack, exit_index = _check_exit_attack(model, exit_attack, exit_index)
    exits = exit_training.output_count(model)
    validation.check_int(batch_size, "batch_size", minimum=1)
    validation.check_int(max_batches, "max_batches", minimum=1)
    batches = inputs.take_batches(data, batch_size, max_batches, "batch-norm recalibration")
    statistics, examples = {}, {}
    for lam in tradeoffs:
        collector, step = _collecting_step(model, layers, lam, attack, exits, exit_attack, exit_index)
        collector.reset()
        for x, y in batches:
            step(x, y)
        statistics[lam] = {id(layer): collector.statistics(layer) for layer in layers}
        examples[lam] = int(sum(int(tf.shape(x)[0]) for x, _ in batches))
    # Assigned only once every path is computed: a failure above changes nothing.
    for lam, per_layer in statistics.items():
        prefix = dual_batch_norm.ADV_PREFIX if lam > 0.0 else ""
        for layer in layers:
            mean, variance = per_layer[id(layer)]
            getattr(layer, prefix + "moving_mean").assign(mean)
            getattr(layer, prefix + "moving_variance").assign(variance)
    return examples


def _collecting_step(model, layers, lam, attack, exits, exit_attack, exit_index):
    """(collector, traced step) that feeds a batch's statistics at `lam` to the collector.

    Kept on the model for the same settings, so that a `fit` called again (each
    one ends with a recalibration) does not trace the step again.
    """
    key = (tuple(id(l) for l in layers), lam, attack, exits, exit_attack, exit_index)
    steps = model.__dict__.get("_recalibration_steps")
    if steps is None:
        steps = {}
        object.__setattr__(model, "_recalibration_steps", steps)  # past Keras's attribute tracking
    if key in steps:
        return steps[key]
    collector = _Collector(layers)
    bn_training = attack is not None and attack.bn_mode == config_lib.BatchNormMode.TRAIN

    def attack_model(x):
        with base.frozen_statistics():
            return model(x, training=bn_training)

    def collect(x, y):
        with base.tradeoff_override(lam):
            if lam > 0.0:
                x = exit_training.run_attack(
                    attack, attack_model, x, y, exits=exits, exit_attack=exit_attack, exit_index=exit_index
                )
            with base.collecting_statistics(collector):
                model(x, training=False)

    steps[key] = collector, tf.function(collect, reduce_retracing=True)
    return steps[key]


def after_fit(model, fit_args, fit_kwargs, *, tradeoffs, attack, max_batches, exit_attack=None, exit_index=None):
    """Recalibrates on the data `fit(*fit_args, **fit_kwargs)` trained on, or warns when it cannot be re-read.

    Arrays give a reproducible random sample of `max_batches` batches (of
    fit's batch size, 32 by default); a tf.data.Dataset gives its first
    `max_batches` batches. Generators and other one-pass inputs are skipped
    with a warning that says what to call instead.
    """
    if not any(
        isinstance(l, dual_batch_norm.DualBatchNormalization) and l.trainable for l in _compat.flatten_layers(model)
    ):
        return None  # no batch-norm: nothing to recalibrate
    named = dict(zip(("x", "y", "batch_size"), fit_args))
    named.update({k: fit_kwargs[k] for k in ("x", "y", "batch_size") if k in fit_kwargs})
    x, y = named.get("x"), named.get("y")
    if isinstance(y, (list, tuple)) and y and all(isinstance(t, (np.ndarray, tf.Tensor)) for t in y):
        y = y[-1]  # one label array per output (multi-exit): the final exit's
    batch_size = named.get("batch_size") or 32
    if isinstance(x, tf.data.Dataset):
        data = x
    elif y is not None and isinstance(x, (np.ndarray, tf.Tensor)) and len(x) == len(y):
        picked = np.random.default_rng(0).permutation(len(x))[: batch_size * max_batches]
        picked.sort()
        data = (np.asarray(x)[picked], np.asarray(y)[picked])
    else:
        warnings.warn(
            "Batch-norm statistics were not recalibrated after adversarial fit: the training data "
            f"({type(x).__name__}) cannot be read a second time. Call "
            "keras_smart.recalibrate_batchnorm(model, (x, y), attack=...) on a few training batches, or "
            "pass AdversarialCallback(recalibrate=False) to silence this.",
            stacklevel=3,
        )
        return None
    return recalibrate_batchnorm(
        model, data, tradeoffs=tradeoffs, attack=attack, batch_size=batch_size, max_batches=max_batches,
        exit_attack=exit_attack, exit_index=exit_index,
    )
