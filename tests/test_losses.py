"""The once-for-all objectives' row weights and TRADES' KL term."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import losses


@pytest.mark.parametrize(
    "loss, beta, expected_clean, expected_adv",
    [
        ("oat", None, [1.0, 0.8, 0.0], [0.0, 0.2, 1.0]),
        ("trades", None, [1.0, 1.0, 1.0], [0.0, 1.2, 6.0]),
        ("ce_tradeoff", None, [1.0, 1.0, 1.0], [0.0, 1.6, 8.0]),
        ("ce_tradeoff", 2.0, [1.0, 1.0, 1.0], [0.0, 0.4, 2.0]),
    ],
)
def test_row_weights_follow_each_objective(loss, beta, expected_clean, expected_adv):
    config = keras_smart.AdversarialConfig(loss=loss, beta=beta)
    clean, adv = losses.row_weights(config, tf.constant([0.0, 0.2, 1.0]))
    np.testing.assert_allclose(clean.numpy(), expected_clean, rtol=1e-6)
    np.testing.assert_allclose(adv.numpy(), expected_adv, rtol=1e-6)


def test_kl_divergence_matches_its_definition_and_vanishes_on_equal_outputs():
    rng = np.random.default_rng(0)
    p_logits, q_logits = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    p = np.exp(p_logits) / np.exp(p_logits).sum(-1, keepdims=True)
    q = np.exp(q_logits) / np.exp(q_logits).sum(-1, keepdims=True)
    expected = np.sum(p * (np.log(p) - np.log(q)), -1)
    np.testing.assert_allclose(losses.kl_divergence(p_logits, q_logits).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.kl_divergence(p_logits, p_logits + 3.0).numpy(), 0.0, atol=1e-6)


def test_trades_refuses_the_apgd_schedule():
    with pytest.raises(ValueError, match="does not support"):
        keras_smart.AdversarialConfig(
            loss="trades", attack=keras_smart.AttackConfig(eps=0.1, steps=5, step_schedule="apgd")
        )
