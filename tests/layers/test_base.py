"""The trade-off override and expected-noise scopes."""

import tensorflow as tf

from keras_smart import layers as cl
from keras_smart.layers import base


def test_tradeoff_override_nests_and_restores():
    layer = cl.DualBatchNormalization()
    assert float(layer.current_tradeoff()) == 0.0
    with cl.tradeoff_override(0.5):
        assert float(layer.current_tradeoff()) == 0.5
        with cl.tradeoff_override(tf.constant(1.0)):
            assert float(layer.current_tradeoff()) == 1.0
        assert float(layer.current_tradeoff()) == 0.5
    assert float(layer.current_tradeoff()) == 0.0


def test_override_wins_over_the_bound_variable():
    layer = cl.DualBatchNormalization()
    layer.bind_tradeoff(tf.Variable(0.7))
    assert float(layer.current_tradeoff()) == tf.constant(0.7).numpy()
    with cl.tradeoff_override(0.0):
        assert float(layer.current_tradeoff()) == 0.0


def test_expected_noise_restores_on_error():
    try:
        with cl.expected_noise():
            assert not base.noise_enabled()
            raise RuntimeError
    except RuntimeError:
        pass
    assert base.noise_enabled()
