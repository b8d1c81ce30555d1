"""Frozen, validated settings: conversion methods, trade-off modes and mask design."""

import dataclasses
import enum
import math


from keras_smart import validation


class Method(str, enum.Enum):
    """How `convert` makes a model conditional on the trade-off."""

    SMART = "smart"  # dual binary masks over shared weights + dual batch-norm
    FLOAT = "float"  # lam-scaled learnable weight noise + dual batch-norm
    FLOATS = "floats"  # FLOAT + one binary mask shared by both paths
    OAT = "oat"  # FiLM after every batch-norm + dual batch-norm (baseline)


class TradeoffMode(str, enum.Enum):
    """How a SMART layer turns the trade-off lam into a kernel.

    switch: lam = 0 uses the clean mask, lam > 0 the adversarial mask.
    blend:  the mask is (1 - lam) * M_clean + lam * M_adv (continuous, foldable).
    noise:  the adversarial mask plus FLOAT-style lam-scaled weight noise.
    """

    SWITCH = "switch"
    BLEND = "blend"
    NOISE = "noise"


class MaskScore(str, enum.Enum):
    """How `design_masks` ranks weights; the top `density` share of each kernel is kept."""

    MAGNITUDE = "magnitude"  # |W|
    RANDOM = "random"  # uniform draws, independent per path
    SNIP = "snip"  # |W * dL/dW| on data: clean loss for the clean mask, adversarial loss for the adv mask
    LEARNED = "learned"  # per-path trainable scores, top-k with a straight-through estimator


class Norm(str, enum.Enum):
    """The threat model's norm."""

    LINF = "linf"
    L2 = "l2"


class FiLMEncoding(str, enum.Enum):
    """How OAT's FiLM layers encode lam: the raw scalar, or a fixed orthonormal code per value."""

    SCALAR = "scalar"
    ORTHOGONAL = "orthogonal"


def coerce_enum(enum_cls, value, arg_name):
    """Returns `value` as a member of `enum_cls`, with a clear error for anything else."""
    if isinstance(value, enum_cls):
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"`{arg_name}` must be a string, one of {[m.value for m in enum_cls]}. "
            f"Received: {arg_name}={value!r} of type {type(value).__name__}"
        )
    try:
        return enum_cls(value.lower())
    except ValueError:
        raise ValueError(
            f"Unknown `{arg_name}`: expected one of {[m.value for m in enum_cls]}. "
            f"Received: {arg_name}={value!r}"
        ) from None


# The shared checks, re-exported where callers have always found them.
check_tradeoff = validation.check_tradeoff
check_density = validation.check_density


class AttackKind(str, enum.Enum):
    FGSM = "fgsm"
    PGD = "pgd"


class StepSchedule(str, enum.Enum):
    """How a PGD attack sizes its steps.

    fixed:  every step has length `step_size` (Madry et al.).
    cosine: step t of T has length step_size * 0.5 * (1 + cos(pi * t / T)), t = 0..T-1:
            from `step_size` decaying towards 0 (a cheap stand-in for APGD).
    apgd:   APGD-CE (Croce & Hein 2020): momentum steps from 2 * eps, halved per
            example at stagnation checkpoints; its own step rule (`step_size` unused).
    """

    FIXED = "fixed"
    COSINE = "cosine"
    APGD = "apgd"


class ExitAttack(str, enum.Enum):
    """Which exits an attack on a multi-exit network (RDI-Nets) targets.

    single:      one exit's cross-entropy (`exit_index`).
    average:     the mean cross-entropy over the exits.
    max_average: one PGD per exit (single mode), then per example the
                 candidate with the largest summed cross-entropy over all exits.
    adaptive:    at every step, the exit a routing rule picks for the current
                 input (attacks only; training cannot route).
    """

    SINGLE = "single"
    AVERAGE = "average"
    MAX_AVERAGE = "max_average"
    ADAPTIVE = "adaptive"


class BatchNormMode(str, enum.Enum):
    """Batch-norm during attack generation: moving statistics (default) or batch statistics.

    Either way, attack steps never update the moving statistics.
    """

    INFERENCE = "inference"
    TRAIN = "train"




def check_eps(eps, norm, clip_min, clip_max, input_size=None, *, range_fix="set clip_max=255"):
    """Checks that the budget `eps` is below what reaches every input of [clip_min, clip_max].

    The one rule for training (`AttackConfig`), evaluation (`evaluate_tradeoff`)
    and the CLI. L-inf: eps must be < clip_max - clip_min (at or beyond it the
    eps-ball around any input holds the whole input box: no model can be
    robust, and the number says nothing). L2: eps must be < sqrt(d) *
    (clip_max - clip_min), d = `input_size` (values per example: the box's
    diagonal); without `input_size` the L2 bound is not checked.

    Args:
      eps: the budget (a positive real; checked for its range only).
      norm: a `Norm` or its string value.
      clip_min, clip_max: the valid input range.
      input_size: the number of values of one example (e.g. 28 * 28 * 1), or None.
      range_fix: how the caller widens the range, for the hint (default "set clip_max=255").

    Returns:
      `eps` as a float.

    Raises:
      ValueError: eps at or beyond the bound; the message gives both and the likely fix.
    """
    norm = coerce_enum(Norm, norm, "norm")
    eps, low, high = float(eps), float(clip_min), float(clip_max)
    width = high - low
    scaled = "use eps=8/255" if norm == Norm.LINF else "divide eps by 255 too"
    hint = f"If your images are in [0, 255], scale them to [0, 1] and {scaled}, or {range_fix}."
    if norm == Norm.LINF:
        if not eps < width:
            raise ValueError(
                f"`eps` must be below the input range clip_max - clip_min = {width:g} for norm='linf' (inputs in "
                f"[{low:g}, {high:g}]): at eps >= {width:g} the eps-ball around any input holds every input, so "
                f"no model can be robust. Received: eps={eps:g}. {hint}"
            )
        return eps
    if input_size is not None:
        size = int(input_size)
        bound = math.sqrt(size) * width
        if not eps < bound:
            raise ValueError(
                f"`eps` must be below sqrt(d) * (clip_max - clip_min) = {bound:g} for norm='l2' (d = {size} values "
                f"per example, inputs in [{low:g}, {high:g}]): at eps >= {bound:g} the eps-ball around any input "
                f"holds every input, so no model can be robust. Received: eps={eps:g}. {hint}"
            )
    return eps


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """An attack's settings, shared by training, evaluation, the CLI and benchmarks.

    Attributes:
      kind: "pgd" or "fgsm".
      eps: the perturbation budget (> 0), in input units (inputs in [0, 1]);
        for L-inf below clip_max - clip_min (`check_eps`: a larger ball holds every input).
      steps: PGD steps (>= 1); None means 7 for PGD (OAT's training attack), 1 for FGSM.
      step_size: PGD step length (with "cosine": the first, largest step); None
        means 2.5 * eps / steps (Madry et al.) for "fixed" and 2 * eps for
        "cosine". Unused by "apgd", which starts at 2 * eps and halves its own
        steps (None then stores 2 * eps, APGD's first step, for the record).
      norm: "linf" or "l2".
      random_start: PGD starts from a uniform random point of the eps-ball (APGD:
        a random point of its surface).
      clip_min, clip_max: the valid input range.
      bn_mode: "inference" (default) or "train"; see `BatchNormMode`.
      step_schedule: PGD's step rule, a `StepSchedule`: "fixed" (default),
        "cosine" (decaying from `step_size` towards 0) or "apgd" (APGD-CE with
        `steps` iterations). Fixed PGD with a small step converges slowly and
        over-states robustness, most on sparse models; "cosine" and "apgd"
        converge. FGSM takes only "fixed".

    `name` labels the attack in logs: "fgsm", "pgd7", "pgd7-cos", "apgd-ce7".

    Example:
      >>> AttackConfig(kind="pgd", eps=8 / 255, steps=7, step_size=2 / 255).name
      'pgd7'
      >>> AttackConfig(eps=0.3, steps=20, step_schedule="apgd").name
      'apgd-ce20'
    """

    kind: AttackKind = AttackKind.PGD
    eps: float = 8 / 255
    steps: int = None
    step_size: float = None
    norm: Norm = Norm.LINF
    random_start: bool = True
    clip_min: float = 0.0
    clip_max: float = 1.0
    bn_mode: BatchNormMode = BatchNormMode.INFERENCE
    step_schedule: StepSchedule = StepSchedule.FIXED

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("kind", coerce_enum(AttackKind, self.kind, "kind"))
        set_("norm", coerce_enum(Norm, self.norm, "norm"))
        set_("bn_mode", coerce_enum(BatchNormMode, self.bn_mode, "bn_mode"))
        set_("step_schedule", coerce_enum(StepSchedule, self.step_schedule, "step_schedule"))
        if self.kind == AttackKind.FGSM and self.step_schedule != StepSchedule.FIXED:
            raise ValueError(
                "FGSM is a single step of size eps: it has no step schedule. Use kind='pgd' for "
                f"step_schedule={self.step_schedule.value!r}, or step_schedule='fixed'. "
                f"Received: kind='fgsm', step_schedule={self.step_schedule.value!r}"
            )
        set_("eps", validation.check_positive(self.eps, "eps"))
        if self.steps is None:
            set_("steps", 1 if self.kind == AttackKind.FGSM else 7)
        set_("steps", validation.check_int(self.steps, "steps", minimum=1))
        if self.kind == AttackKind.FGSM and self.steps != 1:
            raise ValueError(f"FGSM is a single step: use steps=1 or kind='pgd'. Received: steps={self.steps}")
        step_size = self.step_size
        if step_size is None:
            fixed = self.step_schedule == StepSchedule.FIXED
            step_size = 2.5 * self.eps / self.steps if fixed else 2.0 * self.eps
        set_("step_size", validation.check_positive(step_size, "step_size"))
        if not self.clip_min < self.clip_max:
            raise ValueError(
                "`clip_min` must be below `clip_max`. "
                f"Received: clip_min={self.clip_min}, clip_max={self.clip_max}"
            )
        # L-inf here; L2's bound needs the input size (checked where it is known: training, evaluation).
        check_eps(self.eps, self.norm, self.clip_min, self.clip_max)

    @property
    def name(self):
        """A short label: "fgsm", "pgd7" (fixed steps), "pgd7-cos" (cosine) or "apgd-ce7" (APGD-CE)."""
        if self.kind == AttackKind.FGSM:
            return "fgsm"
        if self.step_schedule == StepSchedule.APGD:
            return f"apgd-ce{self.steps}"
        suffix = "-cos" if self.step_schedule == StepSchedule.COSINE else ""
        return f"pgd{self.steps}{suffix}"


class Sampling(str, enum.Enum):
    """How training draws lam: per example with a clean quota (OAT's default), or one per batch."""

    ELEMENT = "element"
    BATCH = "batch"


# The trade-offs OAT trains with, and the grid `evaluate_tradeoff` and the CLI evaluate by default.
OAT_TRADEOFFS = (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)
OAT_LAMBDAS = OAT_TRADEOFFS  # the old name, kept for one release
EVALUATION_TRADEOFFS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class AdversarialLoss(str, enum.Enum):
    """The per-example objective of once-for-all adversarial training, at trade-off lam.

    oat:         (1 - lam) * CE(f(x), y) + lam * CE(f(x_adv), y)          (OAT)
    trades:      CE(f(x), y) + lam * beta * KL(f(x) || f(x_adv)), x_adv
                 maximising the KL (TRADES, beta = 6 by default)
    ce_tradeoff: CE(f(x), y) + lam * beta * CE(f(x_adv), y)               (Binary-Relax's
                 trade-off loss, beta = 8 by default)

    CE stands for the user's compiled loss; at lam = 0 every form is the clean loss.
    """

    OAT = "oat"
    TRADES = "trades"
    CE_TRADEOFF = "ce_tradeoff"


DEFAULT_BETA = {AdversarialLoss.TRADES: 6.0, AdversarialLoss.CE_TRADEOFF: 8.0}


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
    """Once-for-all adversarial training: the attack and how lam is drawn.

    Attributes:
      attack: the `AttackConfig` that makes x_adv (through the path being trained).
      tradeoffs: the trade-off values training draws from; must include 0 (OAT's set by default).
        (`lambdas=`, its old name, still works for one release, with a DeprecationWarning.)
      sampling: "element" (default): in each batch exactly ceil(clean_share * B)
        examples get lam = 0 and the rest draw uniformly from the non-zero values;
        "batch": one value for the whole batch, uniform over `tradeoffs`.
      clean_share: the lam = 0 quota for "element" sampling (OAT: 1/6).
      seed: seed of the lam draws (with the optimizer step: a resumed run draws the same).
      loss: an `AdversarialLoss` (or its string value): "oat" (default),
        "trades" or "ce_tradeoff".
      beta: the robust term's weight for "trades" (default 6) and
        "ce_tradeoff" (default 8); must be None for "oat".
      shared_weights: which loss trains the kernel weights both SMART masks
        keep: "both" (default: every path's loss, as in OAT) or "adversarial"
        (the lam > 0 loss alone; the clean path then trains only the weights
        its mask keeps alone, and its batch-norm). Other methods ignore it.
      exit_attack: for a multi-exit model (several outputs: the exits' logits,
        earliest first, the final one last), which exits the training attack
        targets: "max_average" (default, RDI-Nets'), "average" or "single"
        (see `ExitAttack`; "adaptive" needs a routing rule and is refused).
        Each exit then trains on the objective, summed over the exits.
        Single-output models ignore it (and `exit_index`).
      exit_index: the exit "single" attacks (Python indexing over the outputs;
        default -1, the final exit); must stay -1 for the other modes.

    Example:
      >>> config = AdversarialConfig(exit_attack="single", exit_index=0)
      >>> config.exit_attack.value, config.exit_index
      ('single', 0)
    """

    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
    tradeoffs: tuple = OAT_TRADEOFFS
    sampling: Sampling = Sampling.ELEMENT
    clean_share: float = 1 / 6
    seed: int = 0
    loss: AdversarialLoss = AdversarialLoss.OAT
    beta: float = None
    shared_weights: str = "both"
    exit_attack: ExitAttack = ExitAttack.MAX_AVERAGE
    exit_index: int = -1
    lambdas: dataclasses.InitVar[tuple] = validation.UNSET

    def __post_init__(self, lambdas):
        tradeoffs = validation.renamed_argument(
            "AdversarialConfig", "lambdas", lambdas, "tradeoffs", self.tradeoffs, OAT_TRADEOFFS
        )
        if self.shared_weights not in ("both", "adversarial"):
            raise ValueError(
                '`shared_weights` must be "both" or "adversarial". '
                f"Received: shared_weights={self.shared_weights!r}"
            )
        object.__setattr__(self, "loss", coerce_enum(AdversarialLoss, self.loss, "loss"))
        if self.loss == AdversarialLoss.OAT:
            if self.beta is not None:
                raise ValueError(
                    "`beta` weights the robust term of loss='trades' or 'ce_tradeoff'; the OAT loss has none. "
                    f"Received: beta={self.beta!r} with loss='oat'"
                )
        else:
            beta = DEFAULT_BETA[self.loss] if self.beta is None else self.beta
            object.__setattr__(self, "beta", validation.check_positive(beta, "beta"))
        if not isinstance(self.attack, AttackConfig):
            raise TypeError(f"`attack` must be an AttackConfig. Received: {type(self.attack).__name__}")
        if self.loss == AdversarialLoss.TRADES and self.attack.step_schedule == StepSchedule.APGD:
            raise ValueError(
                "loss='trades' attacks the KL divergence to the model's own prediction, which APGD-CE "
                "(step_schedule='apgd') does not support: use step_schedule='fixed' or 'cosine'."
            )
        checked = validation.check_tradeoffs(tradeoffs, "tradeoffs")
        if 0.0 not in checked or len(checked) < 2:
            raise ValueError(
                "`tradeoffs` must contain 0 (the clean path) and at least one value > 0. "
                f"Received: tradeoffs={tradeoffs!r}"
            )
        object.__setattr__(self, "tradeoffs", checked)
        object.__setattr__(self, "sampling", coerce_enum(Sampling, self.sampling, "sampling"))
        object.__setattr__(self, "clean_share", validation.check_real(self.clean_share, "clean_share", low=0.0, high=1.0))
        object.__setattr__(self, "seed", validation.check_seed(self.seed))
        self._check_exit_attack()

    def _check_exit_attack(self):
        exit_attack = coerce_enum(ExitAttack, self.exit_attack, "exit_attack")
        if exit_attack == ExitAttack.ADAPTIVE:
            raise ValueError(
                "`exit_attack` must be 'max_average', 'average' or 'single' for training: 'adaptive' attacks the "
                "exit a routing rule picks, which training has none of (use it in evaluation, with "
                "keras_smart.attacks.multi_exit_pgd). Received: exit_attack='adaptive'"
            )
        object.__setattr__(self, "exit_attack", exit_attack)
        object.__setattr__(self, "exit_index", validation.check_int(self.exit_index, "exit_index"))
        if exit_attack != ExitAttack.SINGLE and self.exit_index != -1:
            raise ValueError(
                "`exit_index` picks the exit of exit_attack='single'; leave it at -1 for "
                f"exit_attack={exit_attack.value!r}. Received: exit_index={self.exit_index}"
            )


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """How `design_masks` builds masks.

    Attributes:
      score: a `MaskScore` (or its string value).
      density: the share of each kernel's weights a mask keeps: one number for
        both paths, or `(d_clean, d_adv)`.
      seed: seed for `score="random"` (and tie-breaking); an int.
      max_overlap: None (no constraint) or the largest share, in [0, 1], of
        the smaller SMART mask that the other mask may also keep; the
        adversarial mask gives way (it takes its next-best weights instead).
    """

    score: MaskScore = MaskScore.MAGNITUDE
    density: tuple = (0.5, 0.5)
    seed: int = 0
    max_overlap: float = None

    def __post_init__(self):
        object.__setattr__(self, "score", coerce_enum(MaskScore, self.score, "score"))
        density = self.density
        if isinstance(density, (list, tuple)):
            if len(density) != 2:
                raise ValueError(
                    "`density` must be one number or a pair (d_clean, d_adv). "
                    f"Received: density={density!r}"
                )
            density = (
                check_density(density[0], "density[0] (clean)"),
                check_density(density[1], "density[1] (adv)"),
            )
        else:
            d = check_density(density)
            density = (d, d)
        object.__setattr__(self, "density", density)
        object.__setattr__(self, "seed", validation.check_seed(self.seed))
        if self.max_overlap is not None:
            object.__setattr__(
                self, "max_overlap", validation.check_real(self.max_overlap, "max_overlap", low=0.0, high=1.0)
            )
