"""Validation of settings."""

import dataclasses

import numpy as np
import pytest

from keras_smart import config


def test_mask_config_normalises_density_and_score():
    cfg = config.MaskConfig(score="RANDOM", density=0.5)
    assert cfg.score is config.MaskScore.RANDOM
    assert cfg.density == (0.5, 0.5)
    assert config.MaskConfig(density=[0.2, 1]).density == (0.2, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("seed", [1.5, "0", True])
def test_mask_config_rejects_a_non_int_seed(seed):
    with pytest.raises(TypeError, match="`seed` must be an int"):
        config.MaskConfig(seed=seed)


@pytest.mark.parametrize("value", [0, 1, 0.5, np.float64(0.3), np.int32(1)])
def test_check_tradeoff_accepts_reals_in_range(value):
    assert config.check_tradeoff(value) == float(value)


def test_coerce_enum_rejects_non_strings():
    with pytest.raises(TypeError, match="`method` must be a string"):
        config.coerce_enum(config.Method, 3, "method")


def test_attack_config_defaults_and_derived_step_size():
    cfg = config.AttackConfig(eps=0.3, steps=40)
    assert cfg.kind is config.AttackKind.PGD and cfg.norm is config.Norm.LINF
    assert cfg.step_size == pytest.approx(2.5 * 0.3 / 40)
    assert cfg.name == "pgd40"
    assert config.AttackConfig(kind="fgsm", eps=0.1).steps == 1
    assert config.AttackConfig(eps=0.1).steps == 7
    assert dataclasses.replace(cfg, norm="l2").norm is config.Norm.L2


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"eps": 0}, ValueError, "`eps` must be > 0"),
        ({"eps": -1.0}, ValueError, "`eps` must be > 0"),
        ({"steps": 0}, ValueError, "`steps` must be an int >= 1"),
        ({"step_size": -0.1}, ValueError, "`step_size` must be > 0"),
        ({"norm": "l1"}, ValueError, "Unknown `norm`"),
        ({"kind": "cw"}, ValueError, "Unknown `kind`"),
        ({"kind": "fgsm", "steps": 7}, ValueError, "single step"),
        ({"bn_mode": "eval"}, ValueError, "Unknown `bn_mode`"),
        ({"clip_min": 1.0, "clip_max": 0.0}, ValueError, "`clip_min` must be below"),
    ],
)
def test_attack_config_rejects_bad_settings(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        config.AttackConfig(**kwargs)
