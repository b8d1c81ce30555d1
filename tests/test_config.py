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
