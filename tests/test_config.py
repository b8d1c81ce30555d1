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


# --- eps against the input range (one rule: config.check_eps) -----------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"eps": 1.0}, {"eps": 1.5}, {"eps": 8.0, "clip_max": 1.0}, {"eps": 2.0, "clip_min": -1.0, "clip_max": 1.0},
     {"eps": float("inf")}, {"kind": "fgsm", "eps": 1.5}],
)
def test_attack_config_rejects_an_linf_eps_that_reaches_every_input(kwargs):
    with pytest.raises(ValueError, match="`eps` must be below the input range clip_max - clip_min"):
        config.AttackConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"eps": 0.999}, {"eps": 0.5}, {"eps": 8.0, "clip_max": 255.0}, {"eps": 1.9, "clip_min": -1.0}]
)
def test_attack_config_accepts_an_linf_eps_below_the_range(kwargs):
    assert config.AttackConfig(**kwargs).eps == kwargs["eps"]


def test_eps_message_says_what_was_expected_received_and_how_to_fix_it():
    with pytest.raises(ValueError) as caught:
        config.AttackConfig(eps=1.5)
    message = str(caught.value)
    assert "clip_max - clip_min = 1 for norm='linf'" in message
    assert "Received: eps=1.5" in message
    assert "If your images are in [0, 255], scale them to [0, 1] and use eps=8/255, or set clip_max=255." in message
    cfg = config.AttackConfig(eps=0.3)
    with pytest.raises(ValueError, match="Received: eps=2"):
        dataclasses.replace(cfg, eps=2.0)  # a replaced config is checked again


def test_l2_eps_bound_is_sqrt_d_times_the_range_when_d_is_known():
    # Without the input size AttackConfig cannot bound an L2 eps: 1.5 is a fine budget for 784 pixels.
    assert config.AttackConfig(eps=1.5, norm="l2").eps == 1.5
    assert config.check_eps(27.9, "l2", 0.0, 1.0, input_size=28 * 28) == pytest.approx(27.9)
    with pytest.raises(ValueError, match=r"sqrt\(d\) \* \(clip_max - clip_min\) = 28 for norm='l2' \(d = 784"):
        config.check_eps(28.0, "l2", 0.0, 1.0, input_size=28 * 28)
    assert config.check_eps(2.0 * 27.9, config.Norm.L2, -1.0, 1.0, input_size=784) == pytest.approx(55.8)
    with pytest.raises(ValueError, match="pass input_range=\\(0, 255\\)"):
        config.check_eps(1.0, "linf", 0.0, 1.0, range_fix="pass input_range=(0, 255)")
