"""Attacks: pure functions over a model callable and tensors, usable inside `tf.function`."""

from keras_smart.attacks.apgd import apgd
from keras_smart.attacks.apgd import apgd_targeted
from keras_smart.attacks.apgd import dlr_loss
from keras_smart.attacks.fgsm import fgsm
from keras_smart.attacks.multi_exit import exit_losses
from keras_smart.attacks.multi_exit import multi_exit_pgd
from keras_smart.attacks.multi_exit import run_multi_exit
from keras_smart.attacks.pgd import pgd
from keras_smart.attacks.square import square

__all__ = [
    "apgd",
    "apgd_targeted",
    "dlr_loss",
    "exit_losses",
    "fgsm",
    "multi_exit_pgd",
    "pgd",
    "run",
    "run_multi_exit",
    "square",
]


def run(config, model_fn, x, y, *, eps=None, seed=None, eot_samples=1):
    """Runs the attack an `AttackConfig` describes.

    `config.step_schedule` picks the step rule: "fixed" and "cosine" run `pgd`
    with that schedule; "apgd" runs `apgd` with the cross-entropy loss (APGD-CE)
    for `config.steps` iterations, its own step sizes (from 2 * eps, halved at
    checkpoints; `config.step_size` is unused) and `config.random_start`. All
    of them work inside `tf.function` with a tf.Variable `eps`.

    Args:
      config: a `keras_smart.AttackConfig`.
      model_fn: a callable mapping inputs to logits.
      x, y: a batch and its labels.
      eps: overrides `config.eps` (e.g. a scheduled tf.Variable); the step size
        scales with it (APGD's steps are relative to eps anyway).
      seed: seed of the random start: None, an int (an op seed), or a stateless
        seed, an int tensor of shape [2] (the same seed, the same start; the
        train step passes [seed, optimizer step]). FGSM has no random start.
      eot_samples: forward passes each gradient averages over (expectation over
        transformation, for randomised models).

    Example:
      >>> model_fn = lambda t: smart(t, training=False)
      >>> config = keras_smart.AttackConfig(eps=0.1, steps=2, step_size=0.05)
      >>> run(config, model_fn, x[:8], y[:8]).shape
      TensorShape([8, 28, 28, 1])
      >>> cosine = keras_smart.AttackConfig(eps=0.1, steps=2, step_schedule="cosine")
      >>> x_adv = run(cosine, model_fn, x[:8], y[:8], eps=0.05)  # the steps scale with the eps override
      >>> float(tf.reduce_max(tf.abs(x_adv - x[:8]))) <= 0.05 + 1e-6
      True
    """
    budget = config.eps if eps is None else eps
    shared = {"eps": budget, "norm": config.norm.value, "clip_min": config.clip_min, "clip_max": config.clip_max}
    if config.kind.value == "fgsm":
        return fgsm(model_fn, x, y, eot_samples=eot_samples, **shared)
    if config.step_schedule.value == "apgd":
        return apgd(
            model_fn, x, y, steps=config.steps, loss="ce", random_start=config.random_start, seed=seed,
            eot_samples=eot_samples, **shared
        )
    step_size = config.step_size if eps is None else config.step_size * budget / config.eps
    return pgd(
        model_fn, x, y, steps=config.steps, step_size=step_size, random_start=config.random_start, seed=seed,
        eot_samples=eot_samples, step_schedule=config.step_schedule.value, **shared
    )
