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


def test_channels_first_axis():
    source = keras.layers.BatchNormalization(axis=1)
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 4)).astype("float32")
    source(x)
    source.set_weights([np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.0, -0.5]), np.array([2.0, 1.0, 0.5])])
    np.testing.assert_allclose(cl.DualBatchNormalization.from_layer(source)(x), source(x), atol=1e-5)


def test_unsupported_options_name_the_layer():
    with pytest.raises(ValueError, match="'renormed' uses.*renorm"):
        cl.DualBatchNormalization(renorm=True, name="renormed")
