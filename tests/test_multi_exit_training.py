"""Once-for-all adversarial training of multi-exit SmartModels: the objective summed over exits, labels, metrics."""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import attacks
from keras_smart import layers as cl
from tests import models
from tests.models import keras

SPARSE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp_exits(method="smart", batch_norm=False):
    """A two-exit MLP (exit_1 after fc1, the final "logits" after fc2), converted; SGD(0) keeps weights still."""
    inputs = keras.Input((6,))
    h = keras.layers.Dense(12, name="fc1")(inputs)
    if batch_norm:
        h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.Activation("tanh", name="act1")(h)
    exit_1 = keras.layers.Dense(3, name="exit_1")(h)
    h = keras.layers.Dense(8, activation="tanh", name="fc2")(h)
    smart = keras_smart.convert(keras.Model(inputs, [exit_1, keras.layers.Dense(3, name="logits")(h)]), method)
    if method in ("smart", "floats"):
        keras_smart.design_masks(smart, score="random", density=(0.6, 0.6) if method == "smart" else 0.6, seed=0)
    smart.compile(keras.optimizers.SGD(0.0), SPARSE)
    return smart


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6)).astype("float32"), rng.integers(0, 3, n), rng.random(n).astype("float32")


def _fgsm_config(**kwargs):
    return keras_smart.AdversarialConfig(attack=keras_smart.AttackConfig(kind="fgsm", eps=0.1), **kwargs)


def _ce(y, logits):
    return float(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)[0])


def _kl(p_logits, q_logits):
    p, q = tf.nn.softmax(p_logits), tf.nn.softmax(q_logits)
    return float(tf.reduce_sum(p * (tf.math.log(p) - tf.math.log(q)), -1)[0])


def _mode_args(config):
    return {"mode": config.exit_attack, **({"exit_index": config.exit_index} if config.exit_attack.value == "single" else {})}


@pytest.mark.parametrize("method, exit_attack, exit_index", [("smart", "max_average", -1), ("oat", "single", 0)])
def test_train_step_loss_is_the_oat_objective_summed_over_exits(method, exit_attack, exit_index):
    smart = _mlp_exits(method)
    models.randomize_conditional_state(smart, seed=4)
    config = _fgsm_config(exit_attack=exit_attack, exit_index=exit_index)
    smart.enable_adversarial(config)
    x, y, w = _data()
    lam = smart.sample_tradeoffs(24).numpy()

    per_exit, adv_correct, adv_weight = np.zeros(2), 0.0, 0.0
    for i in range(24):
        with cl.tradeoff_override(float(lam[i])):
            xi, yi = x[i : i + 1], y[i : i + 1]
            model_fn = lambda t: smart(t, training=False)  # noqa: E731
            clean = np.array([_ce(yi, z) for z in model_fn(xi)])
            adv = np.zeros(2)
            if lam[i] > 0:
                adv_logits = model_fn(attacks.run_multi_exit(config.attack, model_fn, xi, yi, **_mode_args(config)))
                adv = np.array([_ce(yi, z) for z in adv_logits])
                adv_correct += w[i] * float(np.argmax(adv_logits[-1][0]) == yi[0])
                adv_weight += w[i]
            per_exit += w[i] * ((1 - lam[i]) * clean + lam[i] * adv)
    expected = per_exit / 24

    logs = smart.fit(x, y, sample_weight=w, batch_size=24, epochs=1, shuffle=False, verbose=0).history
    assert logs["loss"][0] == pytest.approx(expected.sum(), rel=1e-5)
    assert [logs["exit_1_loss"][0], logs["logits_loss"][0]] == pytest.approx(expected.tolist(), rel=1e-5)
    assert logs["adv_accuracy"][0] == pytest.approx(adv_correct / adv_weight, rel=1e-6)  # the final exit's


def _trades_start_noise(x, lam, seed):
    """TRADES' start noise 0.001 * N(0, I), drawn for the attacked group (lam > 0) from the optimizer step (0)."""
    attacked = np.flatnonzero(lam > 0)
    noise = np.zeros_like(x)
    noise[attacked] = 0.001 * tf.random.stateless_normal((len(attacked), x.shape[1]), [seed + 1, 0]).numpy()
    return noise


@pytest.mark.parametrize("method, loss, exit_attack", [("smart", "ce_tradeoff", "max_average"), ("oat", "trades", "average")])
def test_train_step_loss_matches_trades_and_the_ce_tradeoff_loss_summed_over_exits(method, loss, exit_attack):
    smart = _mlp_exits(method)
    models.randomize_conditional_state(smart, seed=4)
    config = _fgsm_config(loss=loss, exit_attack=exit_attack)
    smart.enable_adversarial(config)
    x, y, w = _data(seed=1)
    lam = smart.sample_tradeoffs(24).numpy()
    start_noise = _trades_start_noise(x, lam, config.seed)

    total = 0.0
    for i in range(24):
        with cl.tradeoff_override(float(lam[i])):
            xi, yi = x[i : i + 1], y[i : i + 1]
            model_fn = lambda t: smart(t, training=False)  # noqa: E731
            logits = model_fn(xi)
            robust = 0.0
            if lam[i] > 0 and loss == "trades":
                start = np.clip(xi + start_noise[i : i + 1], 0.0, 1.0)
                targets = [tf.nn.softmax(z) for z in logits]  # the KL, summed over exits, as CE to own predictions
                x_adv = attacks.run_multi_exit(config.attack, model_fn, start, targets, **_mode_args(config))
                x_adv = np.clip(xi + np.clip(x_adv - xi, -0.1, 0.1), 0.0, 1.0)
                robust = sum(_kl(p, q) for p, q in zip(logits, model_fn(x_adv)))
            elif lam[i] > 0:
                x_adv = attacks.run_multi_exit(config.attack, model_fn, xi, yi, **_mode_args(config))
                robust = sum(_ce(yi, z) for z in model_fn(x_adv))
            total += w[i] * (sum(_ce(yi, z) for z in logits) + lam[i] * config.beta * robust)

    logs = smart.fit(x, y, sample_weight=w, batch_size=24, epochs=1, shuffle=False, verbose=0).history
    assert logs["loss"][0] == pytest.approx(total / 24, rel=1e-5)


def _labels(form, y):
    return {
        "ids": y,
        "column": y[:, None],
        "one_hot": np.eye(3, dtype="float32")[y],
        "per_output": [y, y[:, None]],
    }[form]


def test_one_label_array_of_any_form_or_one_per_output_trains_and_evaluates_every_exit():
    x, y, _ = _data()
    callback = lambda: keras_smart.callbacks.AdversarialCallback(  # noqa: E731
        attack=keras_smart.AttackConfig(kind="fgsm", eps=0.1), recalibrate=False
    )
    results = {}
    for form in ("ids", "column", "one_hot", "per_output"):
        keras.utils.set_random_seed(0)
        smart = _mlp_exits()
        loss = keras.losses.CategoricalCrossentropy(from_logits=True) if form == "one_hot" else SPARSE
        smart.compile(keras.optimizers.SGD(0.0), loss, metrics=["accuracy"])
        labels = _labels(form, y)
        adversarial = smart.fit(x, labels, batch_size=12, epochs=1, shuffle=False, verbose=0, callbacks=[callback()])
        results[form] = (adversarial.history, smart.evaluate(x, labels, verbose=0, return_dict=True))
    exits = {"loss", "exit_1_loss", "logits_loss", "exit_1_accuracy", "logits_accuracy"}
    adversarial, evaluated = results["ids"]
    assert set(adversarial) == exits | {"adv_accuracy", "adv_eps"} and set(evaluated) == exits
    for form, (other_adversarial, other_evaluated) in results.items():
        for key in exits:
            assert other_adversarial[key] == pytest.approx(adversarial[key], rel=1e-5), (form, key)
            assert other_evaluated[key] == pytest.approx(evaluated[key], rel=1e-5), (form, key)
    # The ordinary fit (the last model: one label array per output) takes one label array too.
    plain = smart.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0).history
    assert set(plain) == exits and plain["loss"][0] == pytest.approx(evaluated["loss"], rel=1e-5)


def test_a_flat_list_of_metrics_gives_each_exit_its_own_metric_objects():
    smart = _mlp_exits()
    smart.compile(keras.optimizers.SGD(0.0), SPARSE, metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")])
    x, y, _ = _data(48)
    logs = smart.evaluate(x, y, verbose=0, return_dict=True)
    predictions = smart.predict(x, verbose=0)
    assert logs["exit_1_acc"] == pytest.approx(np.mean(np.argmax(predictions[0], -1) == y))
    assert logs["logits_acc"] == pytest.approx(np.mean(np.argmax(predictions[1], -1) == y))
    assert logs["exit_1_acc"] != logs["logits_acc"]


def _mlp_bn_exits(method):
    smart = _mlp_exits(method, batch_norm=True)
    smart.compile(keras.optimizers.Adam(1e-2), SPARSE)
    return smart


def _head_kernels(smart):
    return {name: smart.get_layer(name).get_weights()[0].copy() for name in ("exit_1", "logits")}


def _grid():
    """Every (method, exit attack); the loss tests above cover SMART and OAT, so two run by default, the rest slow."""
    fast = {("float", "average"), ("floats", "single")}
    return [
        pytest.param(method, mode, marks=() if (method, mode) in fast else pytest.mark.slow)
        for method in models.METHODS
        for mode in ("max_average", "average", "single")
    ]


@pytest.mark.parametrize("method, exit_attack", _grid())
def test_every_exit_attack_trains_every_method(method, exit_attack):
    smart = _mlp_bn_exits(method)
    x, y, _ = _data(16)
    callback = keras_smart.callbacks.AdversarialCallback(
        attack=keras_smart.AttackConfig(eps=0.1, steps=2), tradeoffs=(0.0, 1.0), clean_share=0.5,
        exit_attack=exit_attack, exit_index=0 if exit_attack == "single" else -1, recalibrate=False,
    )
    before = _head_kernels(smart)
    logs = smart.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback]).history
    assert all(math.isfinite(logs[key][0]) for key in ("loss", "exit_1_loss", "logits_loss", "adv_accuracy"))
    for name, kernel in _head_kernels(smart).items():
        assert not np.allclose(kernel, before[name]), name
    bn = smart.get_layer("bn1")
    assert np.any(bn.moving_mean.numpy() != 0) and np.any(bn.adv_moving_mean.numpy() != 0)


def _train(steps_per_execution):
    keras.utils.set_random_seed(0)
    smart = _mlp_exits()
    smart.compile(keras.optimizers.Adam(1e-2), SPARSE, steps_per_execution=steps_per_execution)
    x, y, _ = _data(32)
    attack = keras_smart.AttackConfig(eps=0.1, steps=2, random_start=False)
    callback = keras_smart.callbacks.AdversarialCallback(attack=attack, recalibrate=False)
    logs = smart.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[callback]).history
    return smart, logs


def test_steps_per_execution_trains_as_one_step_at_a_time():
    one, _ = _train(1)
    two, logs = _train(2)
    assert all(math.isfinite(v) for v in logs["loss"])
    assert int(two.optimizer.iterations.numpy()) == 4
    for a, b in zip(two.get_weights(), one.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


@pytest.mark.slow
def test_backup_and_restore_resumes_multi_exit_training_where_it_stopped(tmp_path):
    x, y, _ = _data(32)

    def run(interrupt):
        keras.utils.set_random_seed(0)
        smart = _mlp_exits()
        smart.compile(keras.optimizers.Adam(1e-2), SPARSE)
        attack = keras_smart.AttackConfig(eps=0.1, steps=2, random_start=False)
        callbacks = [
            keras.callbacks.BackupAndRestore(str(tmp_path / ("backup" if interrupt else "straight"))),
            keras_smart.callbacks.AdversarialCallback(attack=attack, exit_attack="average"),
        ]
        fit = lambda extra: smart.fit(  # noqa: E731
            x, [y, y], batch_size=8, epochs=3, verbose=0, shuffle=False, callbacks=callbacks + extra
        )
        if interrupt:
            with pytest.raises(RuntimeError, match="interrupted"):
                fit([_Interrupt()])
            smart = _mlp_exits()  # a fresh process rebuilds the model
            smart.compile(keras.optimizers.Adam(1e-2), SPARSE)
        return smart, fit([]).history

    straight, _ = run(interrupt=False)
    resumed, resumed_logs = run(interrupt=True)
    assert len(resumed_logs["loss"]) == 2
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_recalibration_makes_the_adversarial_statistics_with_the_exit_attack():
    smart = _mlp_bn_exits("smart")
    models.randomize_conditional_state(smart, seed=2)
    x, y, _ = _data(32)
    attack = keras_smart.AttackConfig(kind="fgsm", eps=0.3)
    counts = keras_smart.recalibrate_batchnorm(smart, (x, y), attack=attack, exit_attack="single", exit_index=0)
    assert counts == {0.0: 32, 1.0: 32}
    bn = smart.get_layer("bn1")
    first_exit = bn.adv_moving_mean.numpy()

    with cl.tradeoff_override(1.0):  # the final exit's attack, with the statistics as they are now
        x_adv = attacks.run_multi_exit(attack, lambda t: smart(t, training=False), x, y, mode="single", exit_index=-1)
        expected = keras.Model(smart.inputs, smart.get_layer("fc1").output)(x_adv, training=False).numpy()
    keras_smart.recalibrate_batchnorm(smart, (x, y), tradeoffs=(1.0,), attack=attack, exit_attack="single", exit_index=-1)
    np.testing.assert_allclose(bn.adv_moving_mean.numpy(), expected.mean(0), atol=1e-5)
    np.testing.assert_allclose(bn.adv_moving_variance.numpy(), expected.var(0), rtol=1e-4, atol=1e-6)
    assert not np.allclose(bn.adv_moving_mean.numpy(), first_exit)


def test_tradeoff_accuracies_report_the_final_exit():
    smart = _mlp_exits()
    models.randomize_conditional_state(smart, seed=3)
    x, y, _ = _data(40)
    attack = keras_smart.AttackConfig(kind="fgsm", eps=0.1)
    accuracies = keras_smart.callbacks.tradeoff_accuracies(smart, x, y, (0.0,), attack, exit_attack="single", exit_index=0)
    keras_smart.set_tradeoff(smart, 0.0)
    with cl.tradeoff_override(0.0):
        x_adv = attacks.run_multi_exit(attack, lambda t: smart(t, training=False), x, y, mode="single", exit_index=0)
        adv = smart(x_adv, training=False)[-1].numpy()
    assert accuracies["clean_acc@0"] == pytest.approx(np.mean(np.argmax(smart.predict(x, verbose=0)[-1], -1) == y))
    assert accuracies["fgsm_acc@0"] == pytest.approx(np.mean(np.argmax(adv, -1) == y))


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"exit_attack": "worst"}, ValueError, "Unknown `exit_attack`"),
        ({"exit_attack": "adaptive"}, ValueError, "'adaptive' attacks the exit a routing rule picks"),
        ({"exit_attack": "average", "exit_index": 0}, ValueError, "leave it at -1"),
        ({"exit_index": 1.5, "exit_attack": "single"}, TypeError, "`exit_index` must be an int"),
    ],
)
def test_bad_exit_attack_settings_are_refused(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        keras_smart.callbacks.AdversarialCallback(**kwargs)


def test_the_model_decides_which_exit_settings_fit():
    smart = _mlp_exits()
    with pytest.raises(ValueError, match=r"`exit_index` must be in \[-2, 2\) for .* 2 exits"):
        smart.enable_adversarial(_fgsm_config(exit_attack="single", exit_index=2))
    apgd = keras_smart.AdversarialConfig(attack=keras_smart.AttackConfig(eps=0.1, steps=2, step_schedule="apgd"))
    with pytest.raises(ValueError, match="2 exits: multi-exit adversarial training attacks with PGD or FGSM"):
        smart.enable_adversarial(apgd)
    callback = keras_smart.callbacks.AdversarialCallback(exit_attack="single", exit_index=0)
    assert (callback.config.exit_attack.value, callback.config.exit_index) == ("single", 0)
    # A one-output model accepts and ignores the exit settings.
    one = keras_smart.convert(keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)]))
    one.enable_adversarial(_fgsm_config(exit_attack="single", exit_index=5))


def _head(shape, name):
    inputs = keras.Input(shape)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10, name="fc")(h), name=name)


def multi_exit_cnn(width=4):
    """A digits CNN with a side exit after each conv block (nested heads, as `exits.attach` makes them)."""
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(width, 3, strides=2, padding="same", name="conv1")(inputs)
    h = keras.layers.ReLU(name="relu1")(keras.layers.BatchNormalization(name="bn1")(h))
    exit_1 = _head((14, 14, width), "exit_1")(h)
    h = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", name="conv2")(h)
    h = keras.layers.ReLU(name="relu2")(keras.layers.BatchNormalization(name="bn2")(h))
    exit_2 = _head((7, 7, 2 * width), "exit_2")(h)
    h = keras.layers.Flatten(name="flatten")(keras.layers.MaxPooling2D(name="pool")(h))
    return keras.Model(inputs, [exit_1, exit_2, keras.layers.Dense(10, name="logits")(h)], name="multi_exit_cnn")


@pytest.mark.slow
def test_a_multi_exit_digits_cnn_trains_with_the_default_max_average_attack():
    x, y = keras_smart.data.digits("train")
    x, y = x[:64], y[:64]
    smart = keras_smart.convert(multi_exit_cnn(), "smart")
    smart.compile(keras.optimizers.Adam(1e-2), SPARSE, metrics=["accuracy"])
    callback = keras_smart.callbacks.AdversarialCallback(
        attack=keras_smart.AttackConfig(eps=0.1, steps=2), recalibration_batches=1
    )
    logs = smart.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback]).history
    names = ("exit_1", "exit_2", "logits")
    assert {f"{n}_{m}" for n in names for m in ("loss", "accuracy")} | {"loss", "adv_accuracy", "adv_eps"} == set(logs)
    assert all(math.isfinite(v[0]) for v in logs.values())
    for bn in ("bn1", "bn2"):
        layer = smart.get_layer(bn)
        assert np.any(layer.moving_mean.numpy() != 0) and np.any(layer.adv_moving_mean.numpy() != 0)
    evaluated = smart.evaluate(x, y, verbose=0, return_dict=True)
    assert set(evaluated) == {f"{n}_{m}" for n in names for m in ("loss", "accuracy")} | {"loss"}


@pytest.mark.slow
@pytest.mark.skipif(keras_smart.KERAS_FLAVOUR != "keras3", reason="one flavour is enough: the step is shared")
def test_multi_exit_training_under_mirrored_strategy_on_two_cpu_devices():
    import json  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, os.path.join(root, "tests", "scripts", "mirrored_training.py"), "smart", "multi_exit"],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert all(math.isfinite(v) for v in result["loss"]) and result["loss"][1] < result["loss"][0]
    assert {"exit_1_loss", "logits_loss", "adv_accuracy"} <= set(result["logs"])
    assert result["clean_stats_moved"] and result["adv_stats_moved"]
