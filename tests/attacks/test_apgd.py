"""APGD (in-graph) against closed-form answers, its invariants, EOT, and IBM ART's APGD on a trained model."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import attacks
from keras_smart import evaluation
from keras_smart.attacks import common
from keras_smart.attacks.apgd import checkpoints
from tests import models
from tests.models import keras

RNG = np.random.default_rng(0)
W = RNG.normal(size=(6, 5)).astype("float32")
X = RNG.uniform(0.3, 0.7, size=(8, 6)).astype("float32")
Y = RNG.integers(0, 5, size=8)


def linear(x):
    return tf.matmul(x, W)


def test_checkpoints_follow_the_paper_for_100_steps():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); w_j = ceil(p_j * 100).
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [1]


def test_dlr_loss_in_closed_form():
    logits = tf.constant([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 4.0]])
    y = tf.constant([0, 1])
    # untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
    expected = [-(3 - 1) / (3 - 0.5), -(2 - 4) / (4 - 1)]
    np.testing.assert_allclose(attacks.dlr_loss(logits, y).numpy(), expected, rtol=1e-6)
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    target = tf.constant([3, 3])
    np.testing.assert_allclose(
        attacks.dlr_loss(logits, y, target).numpy(),
        [-(3 - -1) / (3 - (0.5 - 1) / 2), -(2 - 4) / (4 - (1 + 0) / 2)],
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="at least 4 classes"):
        attacks.dlr_loss(logits[:, :3], y, tf.constant([2, 2]))


def test_apgd_on_a_linear_model_reaches_the_optimal_corner():
    # CE of class 0 grows with x . (w1 - w0): the L-inf optimum is the corner along its sign. A bias
    # keeps class 0 winning by >= 1 logit everywhere in the ball, so APGD returns its highest-loss point.
    w2 = W[:, :2]
    d = w2[:, 1] - w2[:, 0]
    corner = X + 0.1 * np.sign(d)
    bias = tf.constant([1.0 + float(np.max(corner @ d)), 0.0])

    def two_class(x):
        return tf.matmul(x, w2) + bias

    x_adv = attacks.apgd(two_class, X, np.zeros(len(X), int), eps=0.1, steps=20, seed=1).numpy()
    np.testing.assert_allclose(x_adv, corner, atol=1e-6)


@pytest.mark.parametrize("norm, eps", [("linf", 0.2), ("l2", 0.6)])
@pytest.mark.parametrize("loss, targeted", [("ce", False), ("dlr", False), ("dlr", True), ("ce", True)])
def test_apgd_stays_in_the_ball_and_the_range(norm, eps, loss, targeted):
    x = RNG.uniform(0, 1, size=(8, 6)).astype("float32")
    target = (Y + 1) % 5 if targeted else None
    x_adv = attacks.apgd(linear, x, Y, eps=eps, steps=12, norm=norm, loss=loss, target=target, seed=0).numpy()
    delta = x_adv - x
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= eps + 1e-5)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_apgd_takes_one_hot_labels():
    onehot = np.eye(5, dtype="float32")[Y]
    ids = attacks.apgd(linear, X, Y, eps=0.2, steps=8, random_start=False).numpy()
    np.testing.assert_allclose(ids, attacks.apgd(linear, X, onehot, eps=0.2, steps=8, random_start=False).numpy())


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"eps": 0.0}, "eps"),
        ({"steps": 0}, "steps"),
        ({"loss": "cw"}, "loss"),
        ({"eot_samples": 0}, "eot_samples"),
        ({"momentum": 1.5}, "momentum"),
        ({"rho": 0.0}, "`rho` must be in \\(0, 1\\]"),
    ],
)
def test_apgd_rejects_bad_settings(kwargs, fragment):
    settings = {"eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=fragment):
        attacks.apgd(linear, X, Y, **settings)


def test_apgd_rejects_settings_of_the_wrong_type():
    with pytest.raises(TypeError, match="`rho` must be a real number in \\(0, 1\\]"):
        attacks.apgd(linear, X, Y, eps=0.1, rho="0.5")
    with pytest.raises(TypeError, match="`target_classes` must be an int >= 1"):
        attacks.apgd_targeted(linear, X, Y, eps=0.1, target_classes=True)


def test_eot_averages_gradients_over_distinct_draws_inside_tf_function():
    """Each draw of a random model must be a fresh sample, also when the noise op has a fixed seed."""
    tf.random.set_seed(0)
    direction = np.zeros((6, 1), "float32")

    def noisy(x):  # logits = x . (d + eta), eta ~ N(0, 1) per call: the gradient of logit 0 is d + eta
        return tf.matmul(x, direction + tf.random.normal((6, 1), seed=7))

    def gradient(samples):
        _, grad, _ = common.loss_and_gradient(noisy, tf.constant(X[:1]), lambda z: z[:, 0], samples)
        return grad

    one = tf.function(lambda: gradient(1))().numpy()
    many = tf.function(lambda: gradient(400))().numpy()
    assert np.abs(one).max() > 0.3  # a single draw is far from the expectation (0)
    assert np.abs(many).max() < 0.3  # 400 distinct draws average to within 6 standard errors of it


def test_eot_gradient_equals_the_plain_gradient_on_a_deterministic_model():
    _, g1, _ = common.loss_and_gradient(linear, tf.constant(X), lambda z: z[:, 2], 1)
    _, g4, logits = common.loss_and_gradient(linear, tf.constant(X), lambda z: z[:, 2], 4)
    np.testing.assert_allclose(g1.numpy(), g4.numpy(), rtol=1e-5)
    np.testing.assert_allclose(logits.numpy(), X @ W, rtol=1e-5)


def test_unconnected_gradients_are_zero_not_none():
    """A model with a non-differentiable input stage (zero gradient) must not crash the attacks."""

    def quantised(x):
        return linear(tf.round(x * 4.0) / 4.0)

    x_adv = attacks.pgd(quantised, X, Y, eps=0.1, steps=3, step_size=0.05, random_start=False).numpy()
    np.testing.assert_allclose(x_adv, X)
    assert attacks.apgd(quantised, X, Y, eps=0.1, steps=3, random_start=False).shape == X.shape


# --- on a trained digits model, against IBM ART ---------------------------------------------------


@pytest.fixture(scope="module")
def digits_model():
    return models.trained_digits_cnn(examples=1000)


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x, training=False).numpy(), -1) == y))


@pytest.mark.slow
def test_our_apgd_matches_ibm_art_within_two_points(digits_model):
    pytest.importorskip("art")
    from art.attacks.evasion import AutoProjectedGradientDescent  # pylint: disable=g-import-not-at-top

    x, y = keras_smart.data.digits("test")
    x, y = x[:400], y[:400]
    model_fn = lambda t: digits_model(t, training=False)  # noqa: E731
    ours = tf.function(lambda a, b: attacks.apgd(model_fn, a, b, eps=0.1, steps=20, seed=0))(
        tf.constant(x), tf.constant(y)
    ).numpy()
    classifier = evaluation.as_art_classifier(digits_model)
    theirs = AutoProjectedGradientDescent(
        classifier, norm=np.inf, eps=0.1, eps_step=0.2, max_iter=20, nb_random_init=1, batch_size=400, verbose=False
    ).generate(x, y)
    clean = _accuracy(digits_model, x, y)
    assert clean > 0.75
    assert _accuracy(digits_model, ours, y) < clean - 0.3, "the attack should bite"
    assert abs(_accuracy(digits_model, ours, y) - _accuracy(digits_model, theirs, y)) <= 0.02


@pytest.mark.slow
def test_targeted_dlr_is_at_least_as_strong_as_art_untargeted_dlr(digits_model):
    pytest.importorskip("art")
    from art.attacks.evasion import AutoProjectedGradientDescent  # pylint: disable=g-import-not-at-top

    x, y = keras_smart.data.digits("test")
    x, y = x[:200], y[:200]
    model_fn = lambda t: digits_model(t, training=False)  # noqa: E731
    ours = attacks.apgd_targeted(model_fn, x, y, eps=0.08, steps=10, target_classes=3, seed=0).numpy()
    classifier = evaluation.as_art_classifier(digits_model)
    theirs = AutoProjectedGradientDescent(
        classifier, norm=np.inf, eps=0.08, eps_step=0.16, max_iter=10, nb_random_init=1, batch_size=200,
        loss_type="difference_logits_ratio", verbose=False,
    ).generate(x, y)
    assert np.abs(ours - x).max() <= 0.08 + 1e-6
    assert _accuracy(digits_model, ours, y) <= _accuracy(digits_model, theirs, y) + 0.01
