"""The in-graph Square attack: its schedule, invariants, and at least IBM ART's strength on a trained model."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import attacks
from keras_smart import evaluation
from keras_smart.attacks.square import window_fraction
from tests import models
from tests.models import keras


def test_window_schedule_follows_the_reference():
    # p_init, halved after 0.1%, 0.5%, 2%, 5%, 10%, 20%, 40%, 60%, 80% of the queries.
    fractions = [float(window_fraction(q, 10000, 0.8)) for q in (0, 10, 11, 51, 201, 501, 1001, 2001, 4001, 6001, 8001)]
    np.testing.assert_allclose(fractions, [0.8, 0.8] + [0.8 / 2**k for k in range(1, 10)], rtol=1e-6)


def _tiny_cnn():
    inputs = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(h)))


def test_square_stays_in_the_ball_and_the_range_and_only_lowers_the_margin():
    model = _tiny_cnn()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 8, 8, 2)).astype("float32")
    logits = model(x).numpy()
    y = np.argmax(logits, -1)  # every example starts correctly classified
    x_adv = attacks.square(lambda t: model(t), x, y, eps=0.05, queries=30, seed=0).numpy()
    assert np.abs(x_adv - x).max() <= 0.05 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0

    def margin(z):
        true = z[np.arange(len(y)), y]
        z = z.copy()
        z[np.arange(len(y)), y] = -np.inf
        return true - z.max(-1)

    # Every accepted move lowered the margin, and the stripes start at least moved the input.
    assert np.mean(margin(model(x_adv).numpy()) < margin(logits)) > 0.9
    assert np.all(np.abs(x_adv - x).max(axis=(1, 2, 3)) > 0)


def test_square_rejects_what_it_cannot_do():
    model = _tiny_cnn()
    x = np.zeros((2, 8, 8, 2), "float32")
    with pytest.raises(ValueError, match="L-inf only"):
        attacks.square(model, x, [0, 1], eps=0.1, norm="l2")
    with pytest.raises(ValueError, match="images"):
        attacks.square(model, np.zeros((2, 6), "float32"), [0, 1], eps=0.1)
    with pytest.raises(ValueError, match="p_init"):
        attacks.square(model, x, [0, 1], eps=0.1, p_init=0.0)
    with pytest.raises(ValueError, match="`queries` must be an int >= 1"):
        attacks.square(model, x, [0, 1], eps=0.1, queries=0)


@pytest.mark.slow
def test_in_graph_square_is_at_least_as_strong_as_ibm_art_square():
    pytest.importorskip("art")
    from art.attacks.evasion import SquareAttack  # pylint: disable=g-import-not-at-top

    model = models.trained_digits_cnn(examples=1000)
    x, y = keras_smart.data.digits("test")
    x, y = x[:200], y[:200]
    model_fn = lambda t: model(t, training=False)  # noqa: E731
    ours = tf.function(lambda a, b: attacks.square(model_fn, a, b, eps=0.1, queries=300, seed=0))(
        tf.constant(x), tf.constant(y)
    ).numpy()
    np.random.seed(0)
    theirs = SquareAttack(
        evaluation.as_art_classifier(model), eps=0.1, max_iter=300, batch_size=200, verbose=False
    ).generate(x, np.eye(10, dtype="float32")[y])

    def accuracy(images):
        return float(np.mean(np.argmax(model_fn(images).numpy(), -1) == y))

    assert accuracy(x) > 0.75
    assert accuracy(ours) < accuracy(x) - 0.2, "the attack should bite"
    assert np.abs(ours - x).max() <= 0.1 + 1e-6
    assert accuracy(ours) <= accuracy(theirs) + 0.01
