"""Our PGD against cleverhans' TF2 PGD with the same settings, on one trained digits model."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from tests import models
from tests.models import keras


@pytest.fixture(scope="module")
def digits_model():
    return models.trained_digits_cnn(examples=None)


@pytest.mark.slow
@pytest.mark.parametrize("norm, eps, step", [("linf", 0.1, 0.02), ("l2", 1.5, 0.3)])
def test_our_pgd_matches_cleverhans_within_two_points(digits_model, norm, eps, step):
    cleverhans_pgd = pytest.importorskip("cleverhans.tf2.attacks.projected_gradient_descent")
    x, y = keras_smart.data.digits("test")
    x, y = tf.constant(x[:500]), tf.constant(y[:500])
    model_fn = lambda t: digits_model(t, training=False)  # noqa: E731
    ours = keras_smart.attacks.pgd(model_fn, x, y, eps=eps, steps=10, step_size=step, norm=norm, seed=0)
    theirs = cleverhans_pgd.projected_gradient_descent(
        model_fn, x, eps, step, 10, np.inf if norm == "linf" else 2,
        clip_min=0.0, clip_max=1.0, y=y, rand_init=True, rand_minmax=eps, sanity_checks=False,
    )

    def accuracy(images):
        return float(np.mean(np.argmax(model_fn(images).numpy(), -1) == y.numpy()))

    clean = accuracy(x)
    assert clean > 0.9
    assert accuracy(ours) < clean - 0.2, "the attack should bite"
    assert abs(accuracy(ours) - accuracy(theirs)) <= 0.02, (accuracy(ours), accuracy(theirs))
