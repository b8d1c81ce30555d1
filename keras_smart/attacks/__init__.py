"""Attacks: pure functions over a model callable and tensors, usable inside `tf.function`."""

from keras_smart.attacks.apgd import apgd
from keras_smart.attacks.apgd import apgd_targeted
from keras_smart.attacks.apgd import dlr_loss
from keras_smart.attacks.fgsm import fgsm
from keras_smart.attacks.pgd import pgd
from keras_smart.attacks.square import square

__all__ = ["apgd", "apgd_targeted", "dlr_loss", "fgsm", "pgd", "run", "square"]


def run(config, model_fn, x, y, *, eps=None, seed=None, eot_samples=1):
    """Runs the attack an `AttackConfig` describes.

    Args:
      config: a `keras_smart.AttackConfig`.
      model_fn: a callable mapping inputs to logits.
      x, y: a batch and its labels.
      eps: overrides `config.eps` (e.g. a scheduled tf.Variable); the step size
        scales with it.
      seed: seed of PGD's random start.
      eot_samples: forward passes each gradient averages over (expectation over
        transformation, for randomised models).

    Example:
      >>> x_adv = run(AttackConfig(eps=0.3, steps=40, step_size=0.01), model_fn, x, y)
    """
    budget = config.eps if eps is None else eps
    shared = {"eps": budget, "norm": config.norm.value, "clip_min": config.clip_min, "clip_max": config.clip_max}
    if config.kind.value == "fgsm":
        return fgsm(model_fn, x, y, eot_samples=eot_samples, **shared)
    step_size = config.step_size if eps is None else config.step_size * budget / config.eps
    return pgd(
        model_fn, x, y, steps=config.steps, step_size=step_size, random_start=config.random_start, seed=seed,
        eot_samples=eot_samples, **shared
    )
