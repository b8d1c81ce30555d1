"""AdversarialCallback with converging attacks: cosine-step PGD and APGD-CE, in training and epoch-end evaluation."""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import attacks
from tests.models import keras


def _small_smart():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    h = keras.layers.Flatten()(keras.layers.BatchNormalization(name="bn")(h))
    smart = keras_smart.convert(keras.Model(inputs, keras.layers.Dense(3, name="logits")(h)), "smart")
    keras_smart.design_masks(smart, score="random", density=(0.7, 0.6), seed=0)
    smart.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return smart


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 1)).astype("float32"), np.arange(n) % 3


@pytest.mark.parametrize("schedule, attack_fn", [("cosine", "pgd"), ("apgd", "apgd")])
def test_adversarial_training_runs_with_a_step_schedule(schedule, attack_fn, monkeypatch):
    """The train step calls the scheduled attack, in-graph, with the callback's eps variable, inside the ball."""
    calls = []
    original = getattr(attacks, attack_fn)

    def recorded(model_fn, x, y, **kwargs):
        calls.append(kwargs)
        x_adv = original(model_fn, x, y, **kwargs)
        bound = tf.cast(kwargs["eps"], x_adv.dtype) + 1e-5
        with tf.control_dependencies([tf.debugging.assert_less_equal(tf.reduce_max(tf.abs(x_adv - x)), bound)]):
            return tf.identity(x_adv)

    monkeypatch.setattr(attacks, attack_fn, recorded)
    smart = _small_smart()
    x, y = _data()
    attack = keras_smart.AttackConfig(eps=0.1, steps=3, step_schedule=schedule)
    callback = keras_smart.callbacks.AdversarialCallback(attack=attack, tradeoffs=(0.0, 1.0), eps_schedule=2)
    history = smart.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback]).history
    assert calls, f"training never called attacks.{attack_fn}"
    assert any(isinstance(c["eps"], tf.Variable) for c in calls)  # the train step's scheduled eps
    assert all(c["steps"] == 3 for c in calls)
    if schedule == "cosine":
        assert {c["step_schedule"] for c in calls} == {"cosine"}
    else:
        assert {c["loss"] for c in calls} == {"ce"}
    assert history["adv_eps"] == pytest.approx([0.05, 0.1])
    assert all(math.isfinite(v) for v in history["loss"] + history["adv_accuracy"])


def test_epoch_end_evaluation_with_apgd_ce_logs_its_accuracy():
    smart = _small_smart()
    x, y = _data()
    x_eval, y_eval = _data(12)
    evaluate_attack = keras_smart.AttackConfig(eps=0.2, steps=20, step_schedule="apgd", random_start=False)
    callback = keras_smart.callbacks.AdversarialCallback(
        attack=keras_smart.AttackConfig(eps=0.1, steps=2), tradeoffs=(0.0, 1.0),
        evaluate=(x_eval, y_eval), evaluate_attack=evaluate_attack,
    )
    logs = smart.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback]).history
    assert {"apgd-ce20_acc@0", "apgd-ce20_acc@1", "clean_acc@0", "clean_acc@1"} <= set(logs)
    # The logged number is APGD-CE's accuracy through the path at lam = 1 (no random start: reproducible).
    keras_smart.set_tradeoff(smart, 1.0)
    model_fn = lambda t: smart(t, training=False)  # noqa: E731
    x_adv = attacks.apgd(model_fn, x_eval, y_eval, eps=0.2, steps=20, loss="ce", random_start=False)
    assert np.abs(x_adv.numpy() - x_eval).max() <= 0.2 + 1e-6
    expected = float(np.mean(np.argmax(model_fn(x_adv).numpy(), -1) == y_eval))
    assert logs["apgd-ce20_acc@1"] == [pytest.approx(expected)]
    assert logs["apgd-ce20_acc@1"][0] <= logs["clean_acc@1"][0]


class _StopAtBatch(keras.callbacks.Callback):
    """Raises inside `fit`, as Ctrl-C or a failing callback would."""

    def on_train_batch_end(self, batch, logs=None):
        raise KeyboardInterrupt


def test_adversarial_mode_ends_with_its_fit_even_when_fit_raises():
    smart = _small_smart()
    x, y = _data()
    attack = keras_smart.AttackConfig(eps=0.1, steps=2)
    callback = keras_smart.callbacks.AdversarialCallback(attack=attack, tradeoffs=(0.0, 1.0), recalibrate=False)
    with pytest.raises(KeyboardInterrupt):
        smart.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback, _StopAtBatch()])
    assert smart.adversarial_config is None
    history = smart.fit(x, y, batch_size=8, epochs=1, verbose=0).history  # a plain fit trains plainly
    assert "adv_accuracy" not in history


def test_adversarial_mode_set_by_hand_outlives_fit():
    smart = _small_smart()
    x, y = _data()
    config = keras_smart.AdversarialConfig(attack=keras_smart.AttackConfig(eps=0.1, steps=2), tradeoffs=(0.0, 1.0))
    smart.enable_adversarial(config)
    history = smart.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert "adv_accuracy" in history and smart.adversarial_config is config


def test_old_keyword_names_still_work_with_a_deprecation_warning():
    attack = keras_smart.AttackConfig(eps=0.1, steps=2)
    with pytest.warns(DeprecationWarning, match=r"AdversarialCallback\(lambdas=...\)` is deprecated.*use `tradeoffs="):
        callback = keras_smart.callbacks.AdversarialCallback(attack=attack, lambdas=(0.0, 1.0))
    assert callback.config.tradeoffs == (0.0, 1.0)
    with pytest.warns(DeprecationWarning, match=r"AdversarialConfig\(lambdas=...\)"):
        assert keras_smart.AdversarialConfig(lambdas=[1, 0]).tradeoffs == (0.0, 1.0)
    with pytest.raises(TypeError, match="both `tradeoffs` and its old name `lambdas`"):
        keras_smart.AdversarialConfig(tradeoffs=(0.0, 1.0), lambdas=(0.0, 1.0))
    smart = _small_smart()
    with pytest.warns(DeprecationWarning, match=r"set_tradeoff\(lam=...\)"):
        keras_smart.set_tradeoff(smart, lam=0.25)
    assert keras_smart.get_tradeoff(smart) == 0.25
