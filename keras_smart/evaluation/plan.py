"""The plan of one evaluation: every setting of `evaluate_tradeoff` checked before any work, and the model's kind."""

import dataclasses

import numpy as np

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart import inputs
from keras_smart import training
from keras_smart import validation
from keras_smart.evaluation import art
from keras_smart.evaluation import exits as exit_eval
from keras_smart.evaluation import forward as forward_lib
from keras_smart.evaluation import suite
from keras_smart.layers import conditional_kernel as ck
from keras_smart.layers import noise_injection

keras = _compat.keras


@dataclasses.dataclass(frozen=True)
class Plan:
    """The checked settings of one evaluation and what it needs to know about the model.

    Attributes:
      smart: whether the model is a SmartModel (one row per trade-off).
      tradeoffs: the rows' trade-offs (sorted), or [None] for a plain model.
      names: the listed attack names; components: the attacks that run.
      eps, norm, clip: the threat model (clip = (min, max) of valid inputs).
      max_examples, batch_size, seed, eot_samples, noise, options: as passed, checked.
      noisy: the model draws weight noise and `noise` is "sample" (randomised rows at lam > 0).
      has_noise: the model has noisy layers at all (weight noise or NoiseInjection).
      blend: some layer blends its masks (tradeoff_mode="blend").
      policy: the `ExitPolicy` of a multi-exit model (None: one output).
      injected: the model has NoiseInjection layers and `noise` is "sample" (every row randomised).
    """

    smart: bool
    tradeoffs: list
    names: list
    components: list
    eps: float
    norm: config_lib.Norm
    clip: tuple
    max_examples: object
    batch_size: int
    seed: int
    eot_samples: object
    noise: str
    options: dict
    noisy: bool
    has_noise: bool
    blend: bool
    policy: object = None
    injected: bool = False

    @property
    def exits(self):
        """The model's outputs (exits): 1, or the policy's exit count."""
        return 1 if self.policy is None else len(self.policy.macs)

    @property
    def steps_per_row(self):
        """Progress steps of one row."""
        return 2 + len(self.components) if self.policy is None else exit_eval.row_steps(self)

    def randomised(self, tradeoff):
        """Whether the row at `tradeoff` draws fresh noise: weight noise scales with lam (none at 0);
        NoiseInjection layers draw at every trade-off."""
        return self.injected or (self.noisy and (tradeoff is None or tradeoff > 0))

    def eot_for(self, tradeoff):
        """Forward passes each gradient (and Square's loss) averages over in the row at `tradeoff`."""
        if not self.randomised(tradeoff):
            return 1
        return suite.DEFAULT_EOT_SAMPLES if self.eot_samples is None else self.eot_samples


def make_plan(model, *, tradeoffs, attacks, eps, norm, max_examples, batch_size, seed, eot_samples, noise,
              attack_options, input_range, policy=None):
    """The `Plan` of `evaluate_tradeoff`'s arguments; raises TypeError / ValueError for any bad one.

    `attacks=None` means `suite.DEFAULT_ATTACKS`, or `exits.DEFAULT_ATTACKS`
    for a multi-exit model (evaluated under `policy`, see `exits.check_policy`).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`evaluate_tradeoff` expects a keras.Model. Received: {type(model).__name__}")
    smart = isinstance(model, training.SmartModel)
    multi_exit = exit_eval.check_policy(model, policy)
    tradeoffs = check_tradeoffs(tradeoffs, smart)
    if multi_exit:
        names = exit_eval.parse_attacks(exit_eval.DEFAULT_ATTACKS if attacks is None else attacks)
    else:
        names = suite.parse_attacks(suite.DEFAULT_ATTACKS if attacks is None else attacks)
    eps = validation.check_positive(eps, "eps")
    norm = config_lib.coerce_enum(config_lib.Norm, norm, "norm")
    if max_examples is not None:
        max_examples = validation.check_int(max_examples, "max_examples", minimum=1)
    batch_size = validation.check_int(batch_size, "batch_size", minimum=1)
    seed = validation.check_seed(seed)
    if eot_samples is not None:
        eot_samples = validation.check_int(eot_samples, "eot_samples", minimum=1)
    noise = forward_lib.check_noise(noise)
    options = suite.parse_options(attack_options)
    clip = forward_lib.check_input_range(input_range, "input_range")
    if not multi_exit:
        inputs.check_single_io(model, "`evaluate_tradeoff`")
    check_budget(eps, norm, clip, forward_lib.declared_input_shape(model))  # before any data is read
    components = exit_eval.components(names) if multi_exit else suite.components(names)
    if "square" in components and norm == config_lib.Norm.L2:
        art.import_art("art.attacks.evasion", "SquareAttack")  # fail now, not after the gradient attacks
    layers = _compat.flatten_layers(model)
    has_noise = any(isinstance(l, ck.ConditionalKernel) and l.noisy for l in layers)
    injected = any(isinstance(l, noise_injection.NoiseInjection) and l.sigma > 0 for l in layers)
    return Plan(
        smart=smart, tradeoffs=tradeoffs, names=names, components=components, eps=eps, norm=norm, clip=clip,
        max_examples=max_examples, batch_size=batch_size, seed=seed, eot_samples=eot_samples, noise=noise,
        options=options, noisy=has_noise and noise == "sample", has_noise=has_noise or injected,
        blend=any(getattr(l, "tradeoff_mode", None) == config_lib.TradeoffMode.BLEND.value for l in layers),
        policy=policy, injected=injected and noise == "sample",
    )


def check_tradeoffs(tradeoffs, smart):
    """The rows' trade-offs: `config.EVALUATION_TRADEOFFS` by default for a SmartModel, [None] for a plain one.

    Example:
      >>> check_tradeoffs((1.0, 0.0, 1.0), smart=True)
      [0.0, 1.0]
    """
    if tradeoffs is None:
        return list(config_lib.EVALUATION_TRADEOFFS) if smart else [None]
    values = list(validation.check_tradeoffs(tradeoffs, "tradeoffs"))
    if not smart:
        raise ValueError(
            "A plain Keras model has no trade-off: pass tradeoffs=None (one row). To sweep lam, convert the model "
            "with keras_smart.convert and train it once-for-all."
        )
    return values


def check_budget(eps, norm, clip, input_shape):
    """`config.check_eps` for inputs of `input_shape` (batch axis included); L2 waits until d is known."""
    known = input_shape is not None and all(d is not None for d in input_shape[1:])
    size = int(np.prod(input_shape[1:])) if known else None
    return config_lib.check_eps(eps, norm, *clip, size, range_fix="pass input_range=(0, 255)")
