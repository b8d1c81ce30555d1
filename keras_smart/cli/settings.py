"""What `train` needs to build, train and resume a run: `TrainSettings`, saved as the run's config.json."""

import dataclasses
import json

from keras_smart import backbones
from keras_smart import config as config_lib
from keras_smart import validation

# The methods whose training designs masks (MaskUpdate); the others train dense kernels.
MASKED_METHODS = ("smart", "floats")
MASK_ALLOCATIONS = ("layer", "global")
TWO_PATH_TRADEOFFS = (0.0, 1.0)  # the clean and the adversarial path: all SMART's switch mode has


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What `train` needs to build, train and resume a run; saved as the run's config.json.

    Every value is checked when the settings are made, so that `train` refuses
    a bad one before it loads data or writes anything. Two runs with equal
    settings are the same run: `train` resumes an interrupted run only with
    the settings it started with.

    Attributes:
      dataset, data_dir: the data set (`keras_smart.data.load`'s name) and where
        tensorflow-datasets keeps it.
      backbone: a key of `keras_smart.backbones.BACKBONES`.
      method: the conversion method (`keras_smart.config.Method`'s value).
      tradeoff_mode: SMART's trade-off mode (None: the layer default, switch).
      epochs, batch_size, learning_rate: the `fit` and Adam settings.
      eps, attack_steps, step_size, attack_schedule, norm: the training attack
        (step_size None: 2.5 * eps / steps for the fixed schedule, 2 * eps for cosine).
      loss: the once-for-all objective: oat, trades or ce_tradeoff.
      recalibrate: recompute each path's batch-norm statistics at the end of `fit`.
      eps_warmup: epochs of linear eps warm-up (0: none).
      tradeoffs: the trade-offs training draws from, 0 included (None: (0, 1)
        for SMART's switch mode, whose two paths are all it has; OAT's set
        otherwise). `lambdas=`, its old name, works for one more release, with
        a DeprecationWarning.
      clean_share: the share of each batch trained at trade-off 0 (None: 0.5
        with trade-offs (0, 1), OAT's 1/6 otherwise).
      sampling: how trade-offs are drawn: per "element" or per "batch".
      mask_score, mask_allocation, density, min_density, mask_warmup: the mask
        design of SMART and FLOATS: the score, per kernel ("layer") or over all
        kernels ("global"), the (clean, adversarial) densities, the per-kernel
        floor of "global", and the dense epochs before the design.
      exits: names of backbone layers to attach early exits after
        (`keras_smart.exits.attach`, RDI-Nets), in graph order; None for a
        single-exit model. Checked against the backbone when `train` builds it,
        before anything is written.
      augment: pad-crop and flip augmentation (CIFAR-like data).
      max_examples: train on only the first this many examples (0: all).
      seed: seeds Keras, the shuffle, the trade-off draws and the masks.

    Example:
      >>> from keras_smart.cli import TrainSettings
      >>> settings = TrainSettings(epochs=2, tradeoff_mode="switch")
      >>> settings.tradeoffs, settings.clean_share
      ((0.0, 1.0), 0.5)
      >>> TrainSettings().tradeoffs  # blend mode: OAT's set
      (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)
      >>> TrainSettings.from_json(settings.to_json()) == settings
      True
      >>> TrainSettings(epochs=0)
      Traceback (most recent call last):
      ...
      ValueError: `epochs` must be an int >= 1. Received: epochs=0
    """

    dataset: str = "digits"
    data_dir: str = None
    backbone: str = "digits_cnn"
    method: str = "smart"
    tradeoff_mode: str = "blend"
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    eps: float = 0.3
    attack_steps: int = 7
    step_size: float = None
    attack_schedule: str = "fixed"
    loss: str = "oat"
    recalibrate: bool = True
    norm: str = "linf"
    eps_warmup: int = 3
    tradeoffs: tuple = None
    clean_share: float = None
    sampling: str = "element"
    mask_score: str = "snip"
    mask_allocation: str = "global"  # per-path densities judged by AutoAttack (BENCHMARKS.md)
    density: tuple = (0.1, 0.35)  # (clean, adversarial): BENCHMARKS.md, per-path densities
    min_density: float = None
    mask_warmup: int = 1
    exits: tuple = None
    augment: bool = False
    max_examples: int = 0
    seed: int = 0
    lambdas: dataclasses.InitVar[tuple] = validation.UNSET

    def __post_init__(self, lambdas):
        tradeoffs = validation.renamed_argument("TrainSettings", "lambdas", lambdas, "tradeoffs", self.tradeoffs)
        config_lib.coerce_enum(config_lib.Method, self.method, "method")
        if self.backbone not in backbones.BACKBONES:
            raise ValueError(f"Unknown backbone {self.backbone!r}. Choose from {sorted(backbones.BACKBONES)}.")
        self._check_counts()
        self._set("learning_rate", validation.check_positive(self.learning_rate, "learning_rate"))
        self._set_tradeoffs(tradeoffs)
        self._set("density", tuple(validation.check_density(d, "density[i]") for d in self.density))
        # eps (> 0, and below the [0, 1] input range for L-inf: AttackConfig's rule), steps, trade-offs, ...
        self.adversarial_config()
        config_lib.MaskConfig(score=self.mask_score, density=self.density)
        self._check_mask_allocation()
        self._check_exits()

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    def _check_counts(self):
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("eps_warmup", 0), ("mask_warmup", 0),
                              ("max_examples", 0)):
            self._set(name, validation.check_int(getattr(self, name), name, minimum=minimum))
        self._set("seed", validation.check_seed(self.seed))

    def _set_tradeoffs(self, tradeoffs):
        if tradeoffs is None:
            two_paths = self.method == "smart" and self.tradeoff_mode in (None, "switch")
            tradeoffs = TWO_PATH_TRADEOFFS if two_paths else config_lib.OAT_TRADEOFFS
        self._set("tradeoffs", validation.check_tradeoffs(tradeoffs, "tradeoffs"))
        if self.clean_share is None:
            self._set("clean_share", 0.5 if self.tradeoffs == TWO_PATH_TRADEOFFS else 1 / 6)

    def _check_mask_allocation(self):
        if self.min_density is not None:
            self._set("min_density", validation.check_density(self.min_density, "min_density"))
        if self.mask_allocation not in MASK_ALLOCATIONS:
            raise ValueError(f'`mask_allocation` must be "layer" or "global". Received: {self.mask_allocation!r}')
        if self.mask_allocation == "global" and self.mask_score == "learned":
            raise ValueError('mask_score="learned" designs per-kernel masks: use mask_allocation="layer".')

    def _check_exits(self):
        if self.exits is None:
            return
        exits = self.exits
        if isinstance(exits, str) or not isinstance(exits, (list, tuple)):
            raise TypeError(f"`exits` must be a list of layer names, e.g. ('pool1', 'pool2'). Received: {exits!r}")
        if not exits or not all(isinstance(name, str) and name for name in exits):
            raise ValueError(f"`exits` must name at least one layer, each a non-empty string. Received: {exits!r}")
        if len(set(exits)) != len(exits):
            raise ValueError(f"`exits` names a layer more than once: {list(exits)}. One exit per layer.")
        self._set("exits", tuple(exits))

    def attack(self):
        """The training attack, an `AttackConfig`."""
        return config_lib.AttackConfig(
            eps=self.eps, steps=self.attack_steps, step_size=self.step_size, norm=self.norm,
            step_schedule=self.attack_schedule,
        )

    def adversarial_config(self):
        """How training attacks and draws trade-offs, an `AdversarialConfig`."""
        return config_lib.AdversarialConfig(
            attack=self.attack(),
            tradeoffs=self.tradeoffs,
            sampling=self.sampling,
            clean_share=self.clean_share,
            seed=self.seed,
            loss=self.loss,
        )

    def mask_density(self):
        """The (clean, adversarial) densities MaskUpdate designs; FLOATS' one mask takes the adversarial one."""
        return self.density if self.method == "smart" else self.density[1:] * 2

    def to_json(self):
        """The settings as config.json's text."""
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text):
        """The settings config.json's `text` holds (also one an older run wrote, with "lambdas")."""
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"config.json must hold an object of settings. Received: {type(values).__name__}")
        if "lambdas" in values:
            values["tradeoffs"] = values.pop("lambdas")
        for key in ("tradeoffs", "density", "exits"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)
