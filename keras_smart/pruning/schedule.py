"""When native pruning prunes how much: the gradual `PolynomialDecay` schedule, counted in optimizer steps."""

import dataclasses

import numpy as np

from keras_smart import validation

_SPARSITY_MEANING = "(the share of kernel weights set to zero)"


@dataclasses.dataclass(frozen=True)
class PolynomialDecay:
    """Gradual pruning schedule (Zhu & Gupta; TF-MOT's `PolynomialDecay`), towards `prune`'s target.

    At optimizer step t the sparsity level is
    `target + (initial_sparsity - target) * (1 - p) ** power`, with
    `p = clip((t - begin_step) / (end_step - begin_step), 0, 1)`; masks are
    updated every `frequency` steps from `begin_step`, and at `end_step`
    (TF-MOT skips `end_step` unless `frequency` divides `end_step - begin_step`).

    Attributes:
      begin_step: the first step that prunes (steps count optimizer updates).
      end_step: the step at which the target is reached.
      initial_sparsity: the level at `begin_step`.
      power: the decay exponent (3, as in TF-MOT).
      frequency: steps between mask updates.

    Example:
      >>> schedule = keras_smart.pruning.PolynomialDecay(begin_step=0, end_step=500, frequency=50)
      >>> round(schedule.sparsity(250, target=0.8), 3)  # half way: 0.8 * (1 - 0.5 ** 3)
      0.7
      >>> round(schedule.level(299, target=0.8), 3)  # the level in force: the update at step 250
      0.7
    """

    begin_step: int = 0
    end_step: int = 1000
    initial_sparsity: float = 0.0
    power: float = 3.0
    frequency: int = 100

    def __post_init__(self):
        begin_step = validation.check_int(self.begin_step, "begin_step", minimum=0)
        checked = {
            "begin_step": begin_step,
            "end_step": validation.check_int(self.end_step, "end_step", minimum=begin_step + 1),
            "initial_sparsity": validation.check_real(
                self.initial_sparsity, "initial_sparsity", low=0.0, high=1.0, high_open=True,
                meaning=_SPARSITY_MEANING,
            ),
            "power": validation.check_positive(self.power, "power"),
            "frequency": validation.check_int(self.frequency, "frequency", minimum=1),
        }
        for name, value in checked.items():  # plain Python numbers: the config is JSON
            object.__setattr__(self, name, value)

    def sparsity(self, step, target):
        """The schedule's level at optimizer step `step` for final level `target` (0 before `begin_step`)."""
        if step < self.begin_step:
            return 0.0
        progress = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        return target + (self.initial_sparsity - target) * (1.0 - progress) ** self.power

    def last_update(self, step):
        """The last step up to `step` (included) after which masks are updated; None before `begin_step`."""
        if step < self.begin_step:
            return None
        if step >= self.end_step:
            return step
        return self.begin_step + (step - self.begin_step) // self.frequency * self.frequency

    def due(self, step):
        """Whether masks are updated after optimizer step `step`."""
        return self.last_update(step) == step

    def level(self, step, target):
        """The level in force after optimizer step `step`: the schedule's level at its last update until then."""
        last_update = self.last_update(step)
        return 0.0 if last_update is None else self.sparsity(last_update, target)

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def optimizer_step(model):
    """The optimizer steps `model` has taken: the clock every schedule reads (0 before `compile`)."""
    iterations = getattr(getattr(model, "optimizer", None), "iterations", None)
    if iterations is None:
        return 0
    return int(np.asarray(iterations.numpy() if hasattr(iterations, "numpy") else iterations))


__all__ = ["PolynomialDecay", "optimizer_step"]
