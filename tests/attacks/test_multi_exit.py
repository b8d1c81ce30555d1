"""Multi-exit attacks against a hand-written PGD loop on a tiny three-exit model, plus invariants and errors."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import attacks

RNG = np.random.default_rng(0)
HIDDEN = [RNG.normal(size=(4, 5)).astype("float32") for _ in range(3)]
HEADS = [RNG.normal(size=(5, 3)).astype("float32") for _ in range(3)]
X = RNG.uniform(0.2, 0.8, size=(8, 4)).astype("float32")
Y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
SETTINGS = dict(eps=0.1, steps=4, step_size=0.03, random_start=False)


def three_exits(x):
    """Three exits over the same 3 classes, each a tanh layer and a linear head."""
    return [tf.matmul(tf.tanh(tf.matmul(x, h)), w) for h, w in zip(HIDDEN, HEADS)]


def _ce(logits, y=Y):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)


def _entropy(logits):
    p = tf.nn.softmax(logits)
    return -tf.reduce_sum(p * tf.math.log(p), -1)


def _reference(loss, x=X, eps=0.1, steps=4, step_size=0.03):
    """The same steps as multi_exit_pgd, written out: ascend loss(logits_list), sign steps, project, clip."""
    x = tf.constant(x)
    x_adv = x
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            total = tf.reduce_sum(loss(three_exits(x_adv)))
        grad = tape.gradient(total, x_adv)
        x_adv = tf.clip_by_value(x + tf.clip_by_value(x_adv + step_size * tf.sign(grad) - x, -eps, eps), 0.0, 1.0)
    return x_adv.numpy()


def _route(logits_list):
    """A routing rule that reads the current logits: (top class of exit 0 + top class of exit 2) mod 3."""
    return tf.cast((tf.argmax(logits_list[0], -1) + tf.argmax(logits_list[2], -1)) % 3, tf.int32)


def _routed_loss(zs):
    ce = tf.stack([_ce(z) for z in zs], 1)
    return tf.gather(ce, _route(zs)[:, None], batch_dims=1)[:, 0]


@pytest.mark.parametrize(
    "mode_args, loss",
    [
        ({"mode": "single", "exit_index": 0}, lambda zs: _ce(zs[0])),
        ({"mode": "single", "exit_index": -1}, lambda zs: _ce(zs[2])),
        ({"mode": "average"}, lambda zs: (_ce(zs[0]) + _ce(zs[1]) + _ce(zs[2])) / 3),
        ({"mode": "adaptive", "route_fn": _route}, _routed_loss),
        ({"mode": "adaptive", "target_exit": 2}, lambda zs: _ce(zs[2]) - _entropy(zs[2]) + _entropy(zs[0]) + _entropy(zs[1])),
        ({"mode": "adaptive", "target_exit": 0}, lambda zs: _ce(zs[0]) - _entropy(zs[0])),
    ],
)
def test_each_mode_takes_the_steps_of_a_hand_written_loop(mode_args, loss):
    x_adv = attacks.multi_exit_pgd(three_exits, X, Y, **mode_args, **SETTINGS).numpy()
    np.testing.assert_allclose(x_adv, _reference(loss), atol=1e-6)
    assert not np.allclose(x_adv, X)
    graph = tf.function(lambda x, y: attacks.multi_exit_pgd(three_exits, x, y, **mode_args, **SETTINGS))
    np.testing.assert_allclose(graph(tf.constant(X), tf.constant(Y)).numpy(), x_adv, atol=1e-6)


def test_the_routed_loss_follows_the_route_of_the_current_input():
    # The route changes along the way for some examples, so a route fixed at x would give other steps.
    fixed = _route(three_exits(tf.constant(X)))
    x_adv = attacks.multi_exit_pgd(three_exits, X, Y, mode="adaptive", route_fn=_route, **SETTINGS).numpy()
    assert not np.array_equal(_route(three_exits(tf.constant(x_adv))), fixed)
    fixed_loss = lambda zs: tf.gather(tf.stack([_ce(z) for z in zs], 1), fixed[:, None], batch_dims=1)[:, 0]  # noqa: E731
    assert not np.allclose(x_adv, _reference(fixed_loss))


def test_max_average_keeps_the_candidate_with_the_largest_summed_loss_over_all_exits():
    candidates = [attacks.multi_exit_pgd(three_exits, X, Y, mode="single", exit_index=k, **SETTINGS).numpy() for k in range(3)]
    totals = np.stack([sum(_ce(z).numpy() for z in three_exits(tf.constant(c))) for c in candidates])  # [exit, example]
    kept = attacks.multi_exit_pgd(three_exits, X, Y, mode="max_average", **SETTINGS).numpy()
    best = np.argmax(totals, 0)
    np.testing.assert_allclose(kept, np.stack([candidates[best[i]][i] for i in range(len(X))]), atol=1e-6)
    assert len(set(best)) > 1  # the choice is per example
    graph = tf.function(lambda x: attacks.multi_exit_pgd(three_exits, x, Y, mode="max_average", **SETTINGS))
    np.testing.assert_allclose(graph(tf.constant(X)).numpy(), kept, atol=1e-6)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_adaptive_with_a_constant_route_is_single_mode_on_that_exit(k):
    route = lambda zs: tf.fill([tf.shape(zs[0])[0]], k)  # noqa: E731
    routed = attacks.multi_exit_pgd(three_exits, X, Y, mode="adaptive", route_fn=route, **SETTINGS)
    single = attacks.multi_exit_pgd(three_exits, X, Y, mode="single", exit_index=k, **SETTINGS)
    np.testing.assert_array_equal(routed.numpy(), single.numpy())


@pytest.mark.parametrize("mode", ["single", "average", "max_average"])
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.2)])
def test_every_mode_stays_in_the_ball_and_the_input_range(mode, norm, eps):
    x = np.clip(X + 0.25, 0.0, 1.0)  # some inputs at the clip bound
    args = {"exit_index": 1} if mode == "single" else {}
    x_adv = attacks.multi_exit_pgd(
        three_exits, x, Y, mode=mode, eps=eps, steps=5, step_size=eps / 2, norm=norm, seed=3, **args
    ).numpy()
    delta = x_adv - x
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= eps + 1e-6) and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.any(size > 0)


def test_labels_in_any_form_or_one_array_per_exit_give_the_same_attack():
    ids = attacks.multi_exit_pgd(three_exits, X, Y, mode="max_average", **SETTINGS).numpy()
    column = attacks.multi_exit_pgd(three_exits, X, Y[:, None], mode="max_average", **SETTINGS).numpy()
    one_hot = attacks.multi_exit_pgd(three_exits, X, np.eye(3, dtype="float32")[Y], mode="max_average", **SETTINGS).numpy()
    per_exit = attacks.multi_exit_pgd(three_exits, X, [Y, Y[:, None], np.eye(3)[Y]], mode="max_average", **SETTINGS)
    for other in (column, one_hot, per_exit.numpy()):
        np.testing.assert_allclose(other, ids, atol=1e-6)


def test_exit_losses_are_the_per_exit_cross_entropies():
    logits = three_exits(tf.constant(X))
    expected = np.stack([_ce(z).numpy() for z in logits])
    np.testing.assert_allclose(attacks.exit_losses(logits, Y).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(attacks.exit_losses(logits, np.eye(3)[Y]).numpy(), expected, rtol=1e-6)
    other = (Y + 1) % 3
    per_exit = attacks.exit_losses(logits, [Y, other, Y]).numpy()
    np.testing.assert_allclose(per_exit[1], _ce(logits[1], other).numpy(), rtol=1e-6)


def test_run_multi_exit_maps_an_attack_config():
    fgsm = keras_smart.AttackConfig(kind="fgsm", eps=0.05)
    one_step = attacks.multi_exit_pgd(three_exits, X, Y, mode="average", eps=0.05, steps=1, step_size=0.05, random_start=False)
    np.testing.assert_array_equal(attacks.run_multi_exit(fgsm, three_exits, X, Y, mode="average").numpy(), one_step.numpy())
    pgd = keras_smart.AttackConfig(eps=0.1, steps=4, step_size=0.03, random_start=False)
    np.testing.assert_allclose(
        attacks.run_multi_exit(pgd, three_exits, X, Y, mode="single", exit_index=0).numpy(),
        _reference(lambda zs: _ce(zs[0])),
        atol=1e-6,
    )
    # An eps override scales the step size with it, as `attacks.run` does.
    halved = attacks.run_multi_exit(pgd, three_exits, X, Y, mode="single", exit_index=0, eps=0.05).numpy()
    np.testing.assert_allclose(halved, _reference(lambda zs: _ce(zs[0]), eps=0.05, step_size=0.015), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"mode": "worst"}, ValueError, "Unknown `mode`"),
        ({"mode": "single"}, ValueError, "pass `exit_index`"),
        ({"mode": "single", "exit_index": 3}, ValueError, r"`exit_index` must be in \[-3, 3\).*Received: exit_index=3"),
        ({"mode": "single", "exit_index": -4}, ValueError, r"`exit_index` must be in \[-3, 3\)"),
        ({"mode": "single", "exit_index": 1.0}, TypeError, "`exit_index` must be an int"),
        ({"mode": "adaptive"}, ValueError, "pass `route_fn`"),
        ({"mode": "adaptive", "target_exit": 5}, ValueError, r"`target_exit` must be in \[-3, 3\)"),
        ({"mode": "average", "exit_index": 0}, ValueError, "mode='average' takes no `exit_index`"),
        ({"mode": "max_average", "route_fn": _route}, ValueError, "takes no `route_fn`"),
        ({"mode": "average", "y": [Y, Y]}, ValueError, "holds 2 label arrays for a model with 3 exits"),
        ({"mode": "average", "eps": -0.1}, ValueError, "`eps` must be > 0"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(kwargs, error, fragment):
    y = kwargs.pop("y", Y)
    settings = {**SETTINGS, **{k: kwargs.pop(k) for k in list(kwargs) if k in SETTINGS}}
    with pytest.raises(error, match=fragment):
        attacks.multi_exit_pgd(three_exits, X, y, **settings, **kwargs)


def test_a_model_fn_without_a_list_of_exits_and_apgd_are_refused():
    with pytest.raises(TypeError, match="must return a list of logits"):
        attacks.multi_exit_pgd(lambda t: three_exits(t)[0], X, Y, mode="average", **SETTINGS)
    apgd = keras_smart.AttackConfig(eps=0.1, steps=4, step_schedule="apgd")
    with pytest.raises(ValueError, match="step_schedule='fixed' or 'cosine'"):
        attacks.run_multi_exit(apgd, three_exits, X, Y, mode="average")
