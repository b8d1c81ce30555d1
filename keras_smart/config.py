"""Frozen, validated settings: conversion methods, trade-off modes and mask design."""

import dataclasses
import enum
import math
import numbers


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

    MAGNITUDE = "magnitude"
    RANDOM = "random"


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


def check_tradeoff(lam, arg_name="lam"):
    """Validates a trade-off value and returns it as a Python float in [0, 1]."""
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        # NumPy scalars are numbers.Real; 0-d arrays and tensors are not, on purpose.
        raise TypeError(
            f"`{arg_name}` must be a real number in [0, 1]. "
            f"Received: {arg_name}={lam!r} of type {type(lam).__name__}"
        )
    lam = float(lam)
    if math.isnan(lam) or not 0.0 <= lam <= 1.0:
        raise ValueError(
            f"`{arg_name}` must be in [0, 1] (0 = clean, 1 = most robust). Received: {arg_name}={lam}"
        )
    return lam


def check_density(density, arg_name="density"):
    """Validates one density (share of weights kept) and returns it as a float in (0, 1]."""
    if isinstance(density, bool) or not isinstance(density, numbers.Real):
        raise TypeError(
            f"`{arg_name}` must be a real number in (0, 1]. "
            f"Received: {arg_name}={density!r} of type {type(density).__name__}"
        )
    density = float(density)
    if math.isnan(density) or not 0.0 < density <= 1.0:
        raise ValueError(
            f"`{arg_name}` must be in (0, 1] (the share of weights a mask keeps). "
            f"Received: {arg_name}={density}"
        )
    return density


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """How `design_masks` builds masks.

    Attributes:
      score: a `MaskScore` (or its string value).
      density: the share of each kernel's weights a mask keeps: one number for
        both paths, or `(d_clean, d_adv)`.
      seed: seed for `score="random"` (and tie-breaking); an int.
    """

    score: MaskScore = MaskScore.MAGNITUDE
    density: tuple = (0.5, 0.5)
    seed: int = 0

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
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"`seed` must be an int. Received: seed={self.seed!r}")
