"""PGD step schedules (fixed, cosine, APGD-CE) against closed forms, invariants, APGD itself and a trained model."""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import AttackConfig
from keras_smart import attacks
from keras_smart import config
from tests import models

RNG = np.random.default_rng(0)
W = RNG.normal(size=(6, 3)).astype("float32")
X = RNG.uniform(0.3, 0.7, size=(5, 6)).astype("float32")
Y = np.array([0, 1, 2, 0, 1])


def linear(x):
    return tf.matmul(x, W)


def _cosine_steps(step_size, steps):
    return [step_size * 0.5 * (1.0 + math.cos(math.pi * t / steps)) for t in range(steps)]


@pytest.mark.parametrize("steps", [1, 2, 4, 7])
def test_each_cosine_step_has_the_scheduled_length(steps):
    """Two classes, label 0: the CE gradient's sign is sign(w1 - w0) everywhere, so every step is visible."""
    w2 = W[:, :2]
    seen = []

    def two_class(x):  # eager: the while loop runs in Python, so every iterate is recorded
        seen.append(x.numpy())
        return tf.matmul(x, w2)

    y = np.zeros(len(X), int)
    x_adv = attacks.pgd(
        two_class, X, y, eps=100.0, steps=steps, step_size=0.3, random_start=False, clip_min=None, clip_max=None,
        step_schedule="cosine",
    ).numpy()
    iterates = np.stack(seen + [x_adv])
    direction = np.sign(w2[:, 1] - w2[:, 0])
    moves = np.diff(iterates, axis=0)
    expected = np.array(_cosine_steps(0.3, steps))[:, None, None] * direction
    np.testing.assert_allclose(moves, np.broadcast_to(expected, moves.shape), atol=1e-5)
    # The schedule adds up to step_size * (T + 1) / 2 (fixed steps: step_size * T).
    np.testing.assert_allclose(x_adv - X, np.broadcast_to(0.3 * (steps + 1) / 2 * direction, X.shape), atol=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_cosine_pgd_stays_in_the_ball_and_the_range(norm):
    x = RNG.uniform(0, 1, size=(8, 6)).astype("float32")
    y = RNG.integers(0, 3, size=8)
    eps = 0.3 if norm == "linf" else 0.8
    x_adv = attacks.pgd(
        linear, x, y, eps=eps, steps=10, step_size=2 * eps, norm=norm, step_schedule="cosine", seed=1
    ).numpy()
    delta = x_adv - x
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= eps + 1e-5) and np.any(size > eps / 2)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_cosine_pgd_inside_tf_function_with_variable_eps_and_step_size():
    eps, step = tf.Variable(0.05), tf.Variable(0.1)
    run = tf.function(
        lambda x, y: attacks.pgd(linear, x, y, eps=eps, steps=10, step_size=step, step_schedule="cosine")
    )
    first = run(tf.constant(X), tf.constant(Y)).numpy()
    assert np.abs(first - X).max() <= 0.05 + 1e-6
    eps.assign(0.1)
    step.assign(0.2)
    second = run(tf.constant(X), tf.constant(Y)).numpy()
    assert 0.05 + 1e-3 < np.abs(second - X).max() <= 0.1 + 1e-6
    assert run.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("schedule", ["apgd", "linear", 3])
def test_pgd_rejects_other_schedules(schedule):
    error = TypeError if not isinstance(schedule, str) else ValueError
    fragment = "attacks.apgd" if schedule == "apgd" else "step_schedule"
    with pytest.raises(error, match=fragment):
        attacks.pgd(linear, X, Y, eps=0.1, steps=3, step_size=0.01, step_schedule=schedule)


# --- AttackConfig and run ------------------------------------------------------------------------------


def test_attack_config_schedules_step_sizes_and_names():
    fixed = AttackConfig(eps=0.3, steps=20)
    cosine = AttackConfig(eps=0.3, steps=20, step_schedule="COSINE")
    apgd = AttackConfig(eps=0.3, steps=20, step_schedule=config.StepSchedule.APGD)
    assert fixed.step_schedule is config.StepSchedule.FIXED and fixed.step_size == pytest.approx(2.5 * 0.3 / 20)
    assert cosine.step_schedule is config.StepSchedule.COSINE and cosine.step_size == pytest.approx(0.6)
    assert apgd.step_schedule is config.StepSchedule.APGD
    assert AttackConfig(eps=0.3, steps=20, step_size=0.1, step_schedule="cosine").step_size == pytest.approx(0.1)
    names = [c.name for c in (fixed, cosine, apgd, AttackConfig(kind="fgsm", eps=0.3))]
    assert names == ["pgd20", "pgd20-cos", "apgd-ce20", "fgsm"]


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"step_schedule": "linear"}, ValueError, "Unknown `step_schedule`"),
        ({"step_schedule": None}, TypeError, "`step_schedule` must be a string"),
        ({"kind": "fgsm", "step_schedule": "cosine"}, ValueError, "FGSM is a single step.*no step schedule"),
        ({"kind": "fgsm", "step_schedule": "apgd"}, ValueError, "FGSM is a single step.*no step schedule"),
    ],
)
def test_attack_config_rejects_bad_schedules(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        AttackConfig(eps=0.1, **kwargs)


def test_run_passes_the_cosine_schedule_and_scales_its_steps_with_an_eps_override():
    # Steps far inside the ball and the range (at most 5 * 0.02 from X), so the schedule shows in the result.
    cfg = AttackConfig(eps=1.0, steps=5, step_size=0.02, step_schedule="cosine", random_start=False, clip_max=2.0)
    ours = attacks.run(cfg, linear, X, Y).numpy()
    common = {"steps": 5, "random_start": False}
    np.testing.assert_allclose(
        ours, attacks.pgd(linear, X, Y, eps=1.0, step_size=0.02, step_schedule="cosine", **common), atol=1e-7
    )
    assert not np.allclose(ours, attacks.pgd(linear, X, Y, eps=1.0, step_size=0.02, **common), atol=1e-4)
    np.testing.assert_allclose(
        attacks.run(cfg, linear, X, Y, eps=0.5),
        attacks.pgd(linear, X, Y, eps=0.5, step_size=0.01, step_schedule="cosine", **common),
        atol=1e-7,
    )


@pytest.mark.parametrize("random_start", [True, False])
def test_run_with_the_apgd_schedule_is_apgd_ce(random_start):
    w5 = RNG.normal(size=(6, 5)).astype("float32")
    x = RNG.uniform(0.2, 0.8, size=(8, 6)).astype("float32")
    y = RNG.integers(0, 5, size=8)

    def model_fn(t):
        return tf.matmul(t, w5)

    cfg = AttackConfig(eps=0.1, steps=12, step_schedule="apgd", random_start=random_start)
    tf.random.set_seed(0)
    ours = attacks.run(cfg, model_fn, x, y, seed=3).numpy()
    tf.random.set_seed(0)
    reference = attacks.apgd(model_fn, x, y, eps=0.1, steps=12, loss="ce", random_start=random_start, seed=3).numpy()
    np.testing.assert_array_equal(ours, reference)
    tf.random.set_seed(0)
    half = attacks.run(cfg, model_fn, x, y, eps=0.05, seed=3).numpy()
    tf.random.set_seed(0)
    np.testing.assert_array_equal(
        half, attacks.apgd(model_fn, x, y, eps=0.05, steps=12, random_start=random_start, seed=3).numpy()
    )
    assert np.abs(half - x).max() <= 0.05 + 1e-6


def test_run_with_the_apgd_schedule_takes_a_variable_eps_inside_tf_function():
    eps = tf.Variable(0.05)
    cfg = AttackConfig(eps=0.3, steps=10, step_schedule="apgd")
    run = tf.function(lambda x, y: attacks.run(cfg, linear, x, y, eps=eps))
    first = run(tf.constant(X), tf.constant(Y)).numpy()
    assert np.abs(first - X).max() <= 0.05 + 1e-6
    eps.assign(0.1)
    second = run(tf.constant(X), tf.constant(Y)).numpy()
    assert 0.05 + 1e-3 < np.abs(second - X).max() <= 0.1 + 1e-6
    assert run.experimental_get_tracing_count() == 1


# --- on a trained digits model ------------------------------------------------------------------------


@pytest.mark.slow
def test_cosine_and_apgd_are_at_least_as_strong_as_fixed_pgd_on_a_trained_model():
    model = models.trained_digits_cnn(examples=1000)
    x, y = keras_smart.data.digits("test")
    x, y = x[:300], y[:300]
    model_fn = lambda t: model(t, training=False)  # noqa: E731

    def accuracy(schedule):
        cfg = AttackConfig(eps=0.1, steps=5, step_schedule=schedule)
        x_adv = tf.function(lambda a, b: attacks.run(cfg, model_fn, a, b, seed=0))(tf.constant(x), tf.constant(y))
        assert np.abs(x_adv.numpy() - x).max() <= 0.1 + 1e-6
        return float(np.mean(np.argmax(model_fn(x_adv).numpy(), -1) == y))

    clean = float(np.mean(np.argmax(model_fn(x).numpy(), -1) == y))
    fixed, cosine, apgd = accuracy("fixed"), accuracy("cosine"), accuracy("apgd")
    assert clean > 0.75 and fixed < clean - 0.3, "the attacks should bite, or the comparison says nothing"
    # Equal strength up to sampling noise of a few examples (300 digits: 1 point = 3 examples).
    assert cosine <= fixed + 0.02, (fixed, cosine)
    assert apgd <= fixed + 0.02, (fixed, apgd)
