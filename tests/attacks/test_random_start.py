"""Stateless random starts: a seed tensor [2] (e.g. [run seed, optimizer step]) fixes PGD's and APGD's start."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import attacks
from keras_smart import multi_exit_training
from keras_smart.attacks import common

X = tf.random.stateless_uniform([6, 5, 5, 2], [0, 0])
Y = tf.constant([0, 1, 2, 0, 1, 2])
W = tf.random.stateless_normal([50, 3], [0, 1])


def _model(t):
    return tf.matmul(tf.reshape(t, [-1, 50]), W)


def _seed(step):
    return tf.constant([7, step], tf.int64)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_stateless_seed_fixes_the_start_also_inside_tf_function(norm):
    norm = keras_smart.config.Norm(norm)
    start = tf.function(lambda seed: common.random_start(X, 0.3, norm, seed))
    first, again, next_step = start(_seed(3)), start(_seed(3)), start(_seed(4))
    np.testing.assert_array_equal(again, first)
    assert not np.allclose(next_step, first)
    # The eager draw is the same one (up to float rounding of the L2 radius), from a tuple or an array too.
    np.testing.assert_allclose(common.random_start(X, 0.3, norm, (7, 3)), first, atol=1e-6)
    np.testing.assert_allclose(common.random_start(X, 0.3, norm, np.array([7, 3])), first, atol=1e-6)
    # The same distribution as the stateful start: inside the eps-ball, filling it.
    axes = (1, 2, 3)
    size = tf.reduce_max(tf.abs(first), axes) if norm.value == "linf" else tf.norm(tf.reshape(first, [6, -1]), axis=1)
    assert np.all(size.numpy() <= 0.3 + 1e-6) and np.all(size.numpy() > 0.2)


@pytest.mark.parametrize("schedule", ["fixed", "apgd"])
def test_pgd_and_apgd_repeat_their_start_for_a_stateless_seed(schedule):
    config = keras_smart.AttackConfig(eps=0.3, steps=1, step_size=0.01, step_schedule=schedule)
    run = tf.function(lambda seed: attacks.run(config, _model, X, Y, seed=seed))
    first = run(_seed(3))
    np.testing.assert_array_equal(run(_seed(3)), first)
    assert not np.allclose(run(_seed(4)), first)


def test_the_multi_exit_attack_and_the_training_attack_forward_a_stateless_seed():
    config = keras_smart.AttackConfig(eps=0.3, steps=1, step_size=0.01)
    two_exits = lambda t: [_model(t), 2.0 * _model(t)]  # noqa: E731
    run = tf.function(lambda seed: multi_exit_training.run_attack(
        config, two_exits, X, Y, exits=2, exit_attack="max_average", exit_index=-1, seed=seed))
    np.testing.assert_array_equal(run(_seed(3)), run(_seed(3)))
    assert not np.allclose(run(_seed(4)), run(_seed(3)))
    pgd = attacks.multi_exit_pgd(two_exits, X, Y, mode="average", eps=0.3, steps=1, step_size=0.01, seed=(7, 3))
    np.testing.assert_array_equal(
        pgd, attacks.run_multi_exit(config, two_exits, X, Y, mode="average", seed=_seed(3))
    )


@pytest.mark.parametrize(
    "seed, error, received",
    [
        (1.5, TypeError, "seed=1.5 of type float"),
        (True, TypeError, "seed=True of type bool"),
        ("0", TypeError, "seed='0' of type str"),
        (tf.constant([1.0, 2.0]), TypeError, "dtype float32"),
        (tf.constant([1, 2, 3]), ValueError, "shape \\(3,\\)"),
        (tf.constant(3), ValueError, "shape \\(\\)"),
    ],
)
def test_an_invalid_seed_says_what_is_expected_and_what_was_received(seed, error, received):
    expected = "`seed` must be None, an int \\(an op seed\\) or a stateless seed, an int tensor of shape \\[2\\]"
    with pytest.raises(error, match=f"{expected}. Received: .*{received}"):
        attacks.pgd(_model, X, Y, eps=0.3, steps=1, step_size=0.01, seed=seed)
    with pytest.raises(error, match=expected):
        attacks.apgd(_model, X, Y, eps=0.3, steps=1, seed=seed)
