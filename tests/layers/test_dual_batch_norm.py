"""Dual batch-norm: routing by lam, and only the active set's statistics move."""

import numpy as np
import pytest

from keras_smart import layers as cl
from keras_smart.layers import base
from tests.models import keras


def _bn():
    bn = cl.DualBatchNormalization(momentum=0.5)
    bn.build((None, 4, 4, 3))
    return bn


@pytest.mark.parametrize("lam, moved, kept", [(0.0, "", "adv_"), (0.4, "adv_", ""), (1.0, "adv_", "")])
def test_training_moves_only_the_active_sets_statistics(lam, moved, kept):
    bn = _bn()
    x = np.random.default_rng(0).normal(3.0, 2.0, (8, 4, 4, 3)).astype("float32")
    with cl.tradeoff_override(lam):
        bn(x, training=True)
    np.testing.assert_allclose(getattr(bn, moved + "moving_mean").numpy(), 0.5 * x.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_array_equal(getattr(bn, kept + "moving_mean").numpy(), np.zeros(3))
    np.testing.assert_array_equal(getattr(bn, kept + "moving_variance").numpy(), np.ones(3))


def test_inference_routes_by_lam_not_by_input():
    bn = _bn()
    bn.adv_moving_mean.assign([1.0, 2.0, 3.0])
    x = np.zeros((1, 4, 4, 3), "float32")
    with cl.tradeoff_override(0.0):
        np.testing.assert_allclose(bn(x)[0, 0, 0], [0.0, 0.0, 0.0], atol=1e-6)
    with cl.tradeoff_override(0.1):
        np.testing.assert_allclose(bn(x)[0, 0, 0], -np.array([1.0, 2.0, 3.0]) / np.sqrt(1 + 1e-3), rtol=1e-5)


def test_training_normalises_with_batch_statistics():
    bn = _bn()
    x = np.random.default_rng(1).normal(5.0, 3.0, (8, 4, 4, 3)).astype("float32")
    y = bn(x, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)


@pytest.mark.parametrize("axis", [-1, 1])
def test_rows_of_each_lam_value_are_normalised_and_counted_as_their_own_batch(axis):
    """The train step's adversarial rows carry lam per row: each lam value is its own batch, as if split."""
    rng = np.random.default_rng(3)
    lam = np.array([0.2, 1.0, 0.2, 0.4, 1.0, 1.0, 0.2, 0.4], "float32")
    x = rng.normal(2.0, 3.0, (8, 4, 4, 3)).astype("float32") * (1.0 + lam[:, None, None, None])
    x = x if axis == -1 else np.moveaxis(x, -1, 1)
    joint = cl.DualBatchNormalization(momentum=0.5, axis=axis)
    joint.build(x.shape)
    joint.adv_gamma.assign([1.0, 2.0, 0.5])
    joint.adv_beta.assign([0.0, 1.0, -1.0])
    split = cl.DualBatchNormalization(momentum=0.5, axis=axis)
    split.build(x.shape)
    split.set_weights(joint.get_weights())
    tradeoffs = (0.0, 0.2, 0.4, 0.6, 1.0)  # 0.0 and 0.6 have no rows: they move nothing
    with cl.tradeoff_override(lam), base.batch_norm_groups(tradeoffs, lam):
        got = joint(x, training=True).numpy()
    expected = np.zeros_like(x)
    for value in tradeoffs[1:]:
        rows = lam == value
        if rows.any():
            with cl.tradeoff_override(value):
                expected[rows] = split(x[rows], training=True).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    for name in ("adv_moving_mean", "adv_moving_variance", "moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(joint, name).numpy(), getattr(split, name).numpy(), rtol=1e-5, atol=1e-6)


def test_frozen_statistics_stay_still_with_rows_grouped_by_lam():
    bn = cl.DualBatchNormalization()
    x = np.random.default_rng(4).normal(size=(6, 5)).astype("float32")
    bn.build(x.shape)
    before = [w.numpy() for w in bn.weights]
    lam = np.array([0.5, 1.0, 0.5, 1.0, 1.0, 0.5], "float32")
    with cl.tradeoff_override(lam), base.batch_norm_groups((0.0, 0.5, 1.0), lam), base.frozen_statistics():
        bn(x, training=True)
    for b, w in zip(before, bn.weights):
        np.testing.assert_array_equal(b, w.numpy())


def test_channels_first_axis():
    source = keras.layers.BatchNormalization(axis=1)
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 4)).astype("float32")
    source(x)
    source.set_weights([np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.0, -0.5]), np.array([2.0, 1.0, 0.5])])
    np.testing.assert_allclose(cl.DualBatchNormalization.from_layer(source)(x), source(x), atol=1e-5)


def test_unsupported_options_name_the_layer():
    with pytest.raises(ValueError, match="'renormed' uses.*renorm"):
        cl.DualBatchNormalization(renorm=True, name="renormed")
