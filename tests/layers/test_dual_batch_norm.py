"""Dual batch-norm: routing by lam, and only the active set's statistics move."""

import numpy as np
import pytest

from keras_smart import layers as cl
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
def test_rows_with_per_example_lam_are_normalised_and_counted_per_lam_value(axis):
    """The train step's adversarial rows carry lam per row: each lam value is its own batch, as if split."""
    rng = np.random.default_rng(3)
    lam = np.array([0.2, 1.0, 0.2, 0.4, 1.0, 1.0, 0.2, 0.4], "float32")
    x = rng.normal(2.0, 3.0, (8, 4, 4, 3)).astype("float32") * (1.0 + lam[:, None, None, None])
    x = x if axis == -1 else np.moveaxis(x, -1, 1)
    joint = cl.DualBatchNormalization(momentum=0.5, axis=axis)
    joint.build(x.shape)
    joint.adv_gamma.assign([1.0, 2.0, 0.5])
    joint.adv_beta.assign([0.0, 1.0, -1.0])
    with cl.tradeoff_override(lam):
        got = joint(x, training=True).numpy()
    split = cl.DualBatchNormalization(momentum=0.5, axis=axis)
    split.build(x.shape)
    split.set_weights(joint.get_weights())
    split.adv_moving_mean.assign(np.zeros(3))
    split.adv_moving_variance.assign(np.ones(3))
    expected = np.zeros_like(x)
    for value in (0.2, 1.0, 0.4):  # in order of appearance
        rows = lam == value
        with cl.tradeoff_override(value):
            expected[rows] = split(x[rows], training=True).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    for name in ("adv_moving_mean", "adv_moving_variance", "moving_mean"):
        np.testing.assert_allclose(getattr(joint, name).numpy(), getattr(split, name).numpy(), rtol=1e-5, atol=1e-6)


def test_channels_first_axis():
    source = keras.layers.BatchNormalization(axis=1)
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 4)).astype("float32")
    source(x)
    source.set_weights([np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.0, -0.5]), np.array([2.0, 1.0, 0.5])])
    np.testing.assert_allclose(cl.DualBatchNormalization.from_layer(source)(x), source(x), atol=1e-5)


def test_unsupported_options_name_the_layer():
    with pytest.raises(ValueError, match="'renormed' uses.*renorm"):
        cl.DualBatchNormalization(renorm=True, name="renormed")
