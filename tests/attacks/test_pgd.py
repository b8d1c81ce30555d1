"""fgsm and pgd against closed-form answers on a linear model, plus invariants and errors."""

import numpy as np
import pytest
import tensorflow as tf

from keras_smart import attacks

RNG = np.random.default_rng(0)
W = RNG.normal(size=(6, 3)).astype("float32")
B = RNG.normal(size=(3,)).astype("float32")


def linear(x):
    return tf.matmul(x, W) + B


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _input_gradient(x, y):
    """d CE(softmax(xW + b), y) / dx, in closed form: (p - onehot(y)) W^T."""
    p = _softmax(x @ W + B)
    p[np.arange(len(y)), y] -= 1.0
    return p @ W.T


X = RNG.uniform(0.3, 0.7, size=(5, 6)).astype("float32")
Y = np.array([0, 1, 2, 0, 1])


def test_fgsm_linf_is_the_sign_step():
    x_adv = attacks.fgsm(linear, X, Y, eps=0.05).numpy()
    np.testing.assert_allclose(x_adv, X + 0.05 * np.sign(_input_gradient(X, Y)), atol=1e-6)


def test_fgsm_l2_is_the_normalised_gradient_step():
    g = _input_gradient(X, Y)
    expected = X + 0.1 * g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(attacks.fgsm(linear, X, Y, eps=0.1, norm="l2").numpy(), expected, atol=1e-5)


def test_targeted_fgsm_steps_against_the_gradient():
    target = np.array([2, 2, 2, 2, 2])
    x_adv = attacks.fgsm(linear, X, target, eps=0.05, targeted=True).numpy()
    np.testing.assert_allclose(x_adv, X - 0.05 * np.sign(_input_gradient(X, target)), atol=1e-6)


def test_pgd_linf_on_a_two_class_linear_model_reaches_the_optimal_corner():
    w2 = W[:, :2]

    def two_class(x):
        return tf.matmul(x, w2)

    y = np.zeros(len(X), int)
    x_adv = attacks.pgd(two_class, X, y, eps=0.1, steps=20, step_size=0.02, random_start=True, seed=1).numpy()
    # CE for class 0 grows with the margin z1 - z0 = x . (w1 - w0): the best L-inf move is a corner.
    np.testing.assert_allclose(x_adv, X + 0.1 * np.sign(w2[:, 1] - w2[:, 0]), atol=1e-6)


def test_pgd_l2_on_a_two_class_linear_model_moves_along_the_weight_difference():
    w2 = W[:, :2]
    direction = (w2[:, 1] - w2[:, 0]) / np.linalg.norm(w2[:, 1] - w2[:, 0])
    x_adv = attacks.pgd(lambda x: tf.matmul(x, w2), X, np.zeros(len(X), int), eps=0.2, steps=30, step_size=0.05, norm="l2", random_start=False).numpy()
    np.testing.assert_allclose(x_adv, X + 0.2 * direction, atol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_stays_in_the_ball_and_the_range(norm, targeted):
    x = RNG.uniform(0, 1, size=(8, 6)).astype("float32")
    y = RNG.integers(0, 3, size=8)
    eps = 0.3 if norm == "linf" else 0.8
    x_adv = attacks.pgd(linear, x, y, eps=eps, steps=10, step_size=eps / 4, norm=norm, targeted=targeted).numpy()
    delta = x_adv - x
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= eps + 1e-5)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_pgd_raises_the_loss_and_targeted_pgd_lowers_it():
    def loss(x, y):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, linear(x))).numpy()

    x_adv = attacks.pgd(linear, X, Y, eps=0.1, steps=10, step_size=0.02)
    assert loss(x_adv, Y) > loss(X, Y)
    target = np.full(len(X), 2)
    toward = attacks.pgd(linear, X, target, eps=0.1, steps=10, step_size=0.02, targeted=True)
    assert loss(toward, target) < loss(X, target)


def test_pgd_works_inside_tf_function_with_a_variable_eps():
    eps = tf.Variable(0.05)
    run = tf.function(lambda x, y: attacks.pgd(linear, x, y, eps=eps, steps=40, step_size=0.01))
    first = run(tf.constant(X), tf.constant(Y)).numpy()
    assert np.abs(first - X).max() <= 0.05 + 1e-6
    eps.assign(0.1)
    second = run(tf.constant(X), tf.constant(Y)).numpy()
    assert np.abs(second - X).max() > 0.05 + 1e-3
    assert run.experimental_get_tracing_count() == 1


def test_one_hot_labels_give_the_same_attack():
    one_hot = np.eye(3, dtype="float32")[Y]
    np.testing.assert_allclose(attacks.fgsm(linear, X, one_hot, eps=0.05), attacks.fgsm(linear, X, Y, eps=0.05), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"eps": 0.0}, ValueError, "`eps` must be > 0"),
        ({"eps": -0.1}, ValueError, "`eps` must be > 0"),
        ({"eps": float("nan")}, ValueError, "`eps` must be > 0"),
        ({"eps": "0.1"}, TypeError, "`eps` must be a real number > 0"),
        ({"steps": 0}, ValueError, "`steps` must be an int >= 1"),
        ({"steps": 2.5}, TypeError, "`steps` must be an int >= 1"),
        ({"eot_samples": True}, TypeError, "`eot_samples` must be an int >= 1"),
        ({"step_size": 0}, ValueError, "`step_size` must be > 0"),
        ({"norm": "l1"}, ValueError, "Unknown `norm`"),
    ],
)
def test_bad_attack_settings_are_rejected(kwargs, error, fragment):
    settings = {"eps": 0.1, "steps": 3, "step_size": 0.01, **kwargs}
    with pytest.raises(error, match=fragment):
        attacks.pgd(linear, X, Y, **settings)


def test_run_follows_the_config_and_scales_the_step_with_an_eps_override():
    from keras_smart import AttackConfig  # pylint: disable=import-outside-toplevel

    cfg = AttackConfig(kind="pgd", eps=0.1, steps=5, step_size=0.05, random_start=False)
    np.testing.assert_allclose(
        attacks.run(cfg, linear, X, Y),
        attacks.pgd(linear, X, Y, eps=0.1, steps=5, step_size=0.05, random_start=False),
        atol=1e-7,
    )
    half = attacks.run(cfg, linear, X, Y, eps=0.05)
    np.testing.assert_allclose(
        half, attacks.pgd(linear, X, Y, eps=0.05, steps=5, step_size=0.025, random_start=False), atol=1e-7
    )
    fgsm_cfg = AttackConfig(kind="fgsm", eps=0.05)
    np.testing.assert_allclose(attacks.run(fgsm_cfg, linear, X, Y), attacks.fgsm(linear, X, Y, eps=0.05), atol=1e-7)
