"""SmartModel owns one non-trainable trade-off variable that its conditional layers read."""

import keras_smart
from keras_smart import _compat
from tests import models


def test_tradeoff_is_one_non_trainable_model_weight():
    smart = keras_smart.convert(models.nested_model(), "smart")
    names = [_compat.weight_name(w) for w in smart.non_trainable_weights]
    assert names.count("tradeoff") == 1
    assert "tradeoff" not in [_compat.weight_name(w) for w in smart.trainable_weights]


def test_every_conditional_layer_reads_the_same_variable_including_nested_ones():
    smart = keras_smart.convert(models.nested_model(), "smart")
    layers = smart.conditional_layers()
    assert {l.name for l in layers} >= {"inner_fc", "inner_bn", "block_fc", "head"}
    keras_smart.set_tradeoff(smart, 0.6)
    assert {round(float(l.current_tradeoff()), 6) for l in layers} == {0.6}


# --- once-for-all adversarial training ------------------------------------------------------------

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_smart import layers as cl  # noqa: E402
from tests.models import keras  # noqa: E402


def _mlp(method="smart", **options):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(12, activation="tanh", name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc2")(h))
    smart = keras_smart.convert(model, method, **options)
    if method in ("smart", "floats"):
        keras_smart.design_masks(smart, score="random", density=(0.6, 0.6) if method == "smart" else 0.6, seed=0)
    smart.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return smart


def _fgsm_config(**kwargs):
    return keras_smart.AdversarialConfig(attack=keras_smart.AttackConfig(kind="fgsm", eps=0.1), **kwargs)


@pytest.mark.parametrize("sampling", ["element", "batch"])
def test_lam_sampling_follows_the_oat_recipe(sampling):
    smart = _mlp()
    smart.enable_adversarial(_fgsm_config(sampling=sampling))
    lam = smart.sample_tradeoffs(24).numpy()
    assert set(lam) <= set(np.float32(keras_smart.config.OAT_LAMBDAS))
    if sampling == "element":
        assert np.sum(lam == 0) == math.ceil(24 / 6) and np.all(lam[:4] == 0)
        assert len(set(lam[4:])) > 1
    else:
        assert len(set(lam)) == 1
    np.testing.assert_array_equal(lam, smart.sample_tradeoffs(24).numpy())  # same optimizer step
    smart.optimizer.iterations.assign_add(1)
    assert not np.array_equal(lam, smart.sample_tradeoffs(24).numpy()) or sampling == "batch"


@pytest.mark.parametrize(
    "method, options", [("smart", {}), ("smart", {"tradeoff_mode": "blend"}), ("float", {"seed": 1}), ("oat", {})]
)
def test_train_step_loss_is_the_oat_objective(method, options):
    smart = _mlp(method, **options)
    models.randomize_conditional_state(smart, seed=4)
    for layer in smart.conditional_layers():
        if getattr(layer, "noisy", False):
            layer.kernel_noise_scale.assign(0.0)  # deterministic, so the reference can recompute it
    config = _fgsm_config()
    smart.enable_adversarial(config)
    rng = np.random.default_rng(0)
    x = rng.random((24, 6)).astype("float32")
    y = rng.integers(0, 3, 24)
    w = rng.random(24).astype("float32")
    lam = smart.sample_tradeoffs(24).numpy()

    total = 0.0
    for i in range(24):
        with cl.tradeoff_override(float(lam[i])):
            xi, yi = x[i : i + 1], y[i : i + 1]
            ce = lambda inputs: float(  # noqa: E731
                tf.nn.sparse_softmax_cross_entropy_with_logits(yi, smart(inputs, training=False))[0]
            )
            x_adv = keras_smart.attacks.fgsm(lambda t: smart(t, training=False), xi, yi, eps=0.1)
            total += w[i] * ((1 - lam[i]) * ce(xi) + lam[i] * (ce(x_adv) if lam[i] > 0 else 0.0))
    expected = total / 24

    history = smart.fit(x, y, sample_weight=w, batch_size=24, epochs=1, shuffle=False, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert "adv_accuracy" in history.history


def _kl(p_logits, q_logits):
    p, q = tf.nn.softmax(p_logits), tf.nn.softmax(q_logits)
    return float(tf.reduce_sum(p * (tf.math.log(p) - tf.math.log(q)), -1)[0])


@pytest.mark.parametrize("loss, beta", [("trades", None), ("trades", 2.5), ("ce_tradeoff", None)])
@pytest.mark.parametrize("method", ["smart", "oat"])
def test_train_step_loss_matches_trades_and_the_ce_tradeoff_loss(method, loss, beta):
    smart = _mlp(method)
    models.randomize_conditional_state(smart, seed=4)
    config = _fgsm_config(loss=loss, beta=beta)
    smart.enable_adversarial(config)
    rng = np.random.default_rng(1)
    x = rng.random((24, 6)).astype("float32")
    y = rng.integers(0, 3, 24)
    w = rng.random(24).astype("float32")
    lam = smart.sample_tradeoffs(24).numpy()
    # TRADES starts its attack at x + 0.001 * N(0, I), drawn per attacked group from the optimizer step.
    attacked = np.flatnonzero(lam > 0)
    start_noise = np.zeros_like(x)
    start_noise[attacked] = 0.001 * tf.random.stateless_normal((len(attacked), 6), [config.seed + 1, 0]).numpy()

    total = 0.0
    for i in range(24):
        with cl.tradeoff_override(float(lam[i])):
            xi, yi = x[i : i + 1], y[i : i + 1]
            logits = smart(xi, training=False)
            ce = float(tf.nn.sparse_softmax_cross_entropy_with_logits(yi, logits)[0])
            robust = 0.0
            if lam[i] > 0 and loss == "trades":
                # FGSM on the KL: cross-entropy against the model's own prediction on x.
                start = np.clip(xi + start_noise[i : i + 1], 0.0, 1.0)
                x_adv = keras_smart.attacks.fgsm(lambda t: smart(t, training=False), start, tf.nn.softmax(logits), eps=0.1)
                x_adv = np.clip(xi + np.clip(x_adv - xi, -0.1, 0.1), 0.0, 1.0)
                robust = _kl(logits, smart(x_adv, training=False))
            elif lam[i] > 0:
                x_adv = keras_smart.attacks.fgsm(lambda t: smart(t, training=False), xi, yi, eps=0.1)
                robust = float(tf.nn.sparse_softmax_cross_entropy_with_logits(yi, smart(x_adv, training=False))[0])
            total += w[i] * (ce + lam[i] * config.beta * robust)
    expected = total / 24

    history = smart.fit(x, y, sample_weight=w, batch_size=24, epochs=1, shuffle=False, verbose=0)
    assert config.beta == (beta or {"trades": 6.0, "ce_tradeoff": 8.0}[loss])
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shared_weights", ["both", "adversarial"])
def test_shared_weights_decides_which_loss_trains_the_weights_both_masks_keep(shared_weights):
    smart = _mlp()
    # Random masks at 0.6 per path on fc1 (some weights on both paths, some on one); fc2 dense, so
    # that every hidden unit passes a gradient back.
    keras_smart.design_masks(smart, score="random", density=0.6, dense_layers=["fc2"])
    smart.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    smart.enable_adversarial(_fgsm_config(clean_share=1.0, shared_weights=shared_weights))  # every example clean
    masks = keras_smart.get_masks(smart)["fc1"]
    shared = (masks["kernel_clean_mask"] * masks["kernel_adv_mask"]) > 0
    clean_only = (masks["kernel_clean_mask"] > 0) & ~shared
    before = smart.get_layer("fc1").kernel.numpy()
    rng = np.random.default_rng(0)
    smart.fit(rng.random((16, 6)).astype("float32"), rng.integers(0, 3, 16), batch_size=16, epochs=1, verbose=0)
    moved = smart.get_layer("fc1").kernel.numpy() != before
    assert shared.any() and clean_only.any()
    assert moved[clean_only].all()
    assert moved[shared].all() if shared_weights == "both" else not moved[shared].any()


def test_fit_trains_adversarially_only_with_the_callback():
    smart = _mlp()
    x = np.random.default_rng(0).random((16, 6)).astype("float32")
    y = np.arange(16) % 3
    logs = smart.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0).history
    assert "adv_accuracy" not in logs
    callback = keras_smart.callbacks.AdversarialCallback(attack=keras_smart.AttackConfig(eps=0.1, steps=2), eps_schedule=2)
    logs = smart.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback]).history
    assert "adv_accuracy" in logs and logs["adv_eps"] == pytest.approx([0.05, 0.1])
    assert smart.adversarial_config is None  # switched off again after fit
    assert "adv_accuracy" not in smart.fit(x, y, epochs=1, verbose=0).history


def test_attack_steps_leave_batch_norm_statistics_alone():
    bn = cl.DualBatchNormalization()
    x = tf.random.normal((4, 3, 3, 2), 5.0)
    with keras_smart.layers.base.frozen_statistics():
        bn(x, training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)
    bn(x, training=True)
    assert np.all(bn.moving_mean.numpy() != 0.0)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"tradeoffs": (0.0, 1.5)}, ValueError, r"must be in \[0, 1\]"),
        ({"tradeoffs": (0.2, 1.0)}, ValueError, "must contain 0"),
        ({"tradeoffs": (0.0,)}, ValueError, "at least one value > 0"),
        ({"sampling": "epoch"}, ValueError, "Unknown `sampling`"),
        ({"eps_schedule": 0}, ValueError, "`eps_schedule` must be"),
        ({"attack": "pgd"}, TypeError, "must be an AttackConfig"),
        ({"loss": "mart"}, ValueError, "Unknown `loss`"),
        ({"beta": 6.0}, ValueError, "the OAT loss has none"),
        ({"loss": "trades", "beta": -1.0}, ValueError, "`beta` must be > 0"),
        ({"recalibration_batches": 0}, ValueError, "`recalibration_batches` must be an int >= 1"),
        ({"shared_weights": "clean"}, ValueError, "`shared_weights` must be"),
    ],
)
def test_bad_adversarial_settings_are_rejected(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        keras_smart.callbacks.AdversarialCallback(**kwargs)


def test_adversarial_callback_needs_a_smart_model():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile("sgd", "mse")
    with pytest.raises(TypeError, match="trains a SmartModel"):
        model.fit(np.zeros((4, 6)), np.zeros((4, 3)), verbose=0, callbacks=[keras_smart.callbacks.AdversarialCallback()])


def _digits_cnn():
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    h = keras.layers.BatchNormalization(momentum=0.9)(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same")(h)
    h = keras.layers.BatchNormalization(momentum=0.9)(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


@pytest.mark.slow
def test_once_for_all_training_on_the_digits_spans_the_tradeoff():
    x, y = keras_smart.data.digits("train")
    x_test, y_test = keras_smart.data.digits("test")
    smart = keras_smart.convert(_digits_cnn(), "smart")
    smart.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    eps = 0.3
    # Two experts (SMART's switch mode): half of each batch trains the clean path.
    callback = keras_smart.callbacks.AdversarialCallback(
        attack=keras_smart.AttackConfig(eps=eps, steps=5, step_size=0.1),
        tradeoffs=(0.0, 1.0),
        clean_share=0.5,
        eps_schedule=2,
    )
    smart.fit(x, y, batch_size=64, epochs=5, verbose=0, callbacks=[callback])
    pgd20 = keras_smart.AttackConfig(eps=eps, steps=20, step_size=0.025)
    acc = keras_smart.callbacks.tradeoff_accuracies(smart, x_test, y_test, (0.0, 1.0), pgd20)
    assert acc["pgd20_acc@1"] >= acc["pgd20_acc@0"] + 0.3, acc
    # On digits, adversarial training costs little clean accuracy in a run this short: the two
    # paths' clean accuracies are within sampling error (one standard error ~0.6 points on
    # 1,000 test digits), so the clean path must not trail by more than two of them.
    assert acc["clean_acc@0"] >= acc["clean_acc@1"] - 0.012, acc
    assert acc["clean_acc@0"] >= 0.93, acc


@pytest.mark.slow
@pytest.mark.parametrize("method", [
    "smart",
    # SMART runs under two replicas in both flavours; FLOAT in Keras 3 only (suite time: 33 s in tf_keras).
    pytest.param("float", marks=pytest.mark.skipif(keras_smart.KERAS_FLAVOUR == "tf_keras", reason="suite time: Keras 3 covers it")),
])
def test_training_under_mirrored_strategy_on_two_cpu_devices(method):
    import json  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, os.path.join(root, "tests", "scripts", "mirrored_training.py"), method],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert all(math.isfinite(v) for v in result["loss"]) and result["loss"][1] < result["loss"][0]
    assert result["clean_stats_moved"] and result["adv_stats_moved"]


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_where_training_stopped(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((32, 6)).astype("float32")
    y = rng.integers(0, 3, 32)

    def run(interrupt):
        keras.utils.set_random_seed(0)
        smart = _mlp()
        smart.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        keras_smart.set_tradeoff(smart, 0.3)
        attack = keras_smart.AttackConfig(eps=0.1, steps=2, random_start=False)
        callbacks = [
            keras.callbacks.BackupAndRestore(str(tmp_path / ("backup" if interrupt else "straight"))),
            keras_smart.callbacks.AdversarialCallback(attack=attack, eps_schedule=2),
        ]
        if interrupt:
            with pytest.raises(RuntimeError, match="interrupted"):
                smart.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False, callbacks=callbacks + [_Interrupt()])
            # A fresh process rebuilds the model; masks and trade-off must come back from the backup.
            smart = _mlp()
            keras_smart.design_masks(smart, score="random", density=0.6, seed=5)
            smart.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = smart.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False, callbacks=callbacks)
        return smart, history.history

    straight, straight_logs = run(interrupt=False)
    resumed, resumed_logs = run(interrupt=True)
    assert len(resumed_logs["loss"]) == 2  # epochs 1 and 2 only
    assert resumed_logs["adv_eps"] == pytest.approx(straight_logs["adv_eps"][1:])
    assert keras_smart.get_tradeoff(resumed) == pytest.approx(0.3)
    assert int(resumed.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy())
    np.testing.assert_array_equal(keras_smart.get_masks(resumed)["fc1"]["kernel_adv_mask"], keras_smart.get_masks(straight)["fc1"]["kernel_adv_mask"])
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _small_conv(method):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    h = keras.layers.Flatten()(keras.layers.BatchNormalization()(h))
    return keras_smart.convert(keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(h)), method)


@pytest.mark.parametrize("method", ["smart", "oat", "float"])
@pytest.mark.parametrize("setting", ["steps_per_execution", "mixed_float16"])
def test_adversarial_fit_with_steps_per_execution_and_mixed_precision(method, setting):
    policy = keras.mixed_precision.global_policy()
    try:
        if setting == "mixed_float16":
            keras.mixed_precision.set_global_policy("mixed_float16")
        smart = _small_conv(method)
        compile_options = {"steps_per_execution": 2} if setting == "steps_per_execution" else {}
        smart.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_options)
        x = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
        callback = keras_smart.callbacks.AdversarialCallback(attack=keras_smart.AttackConfig(eps=0.1, steps=2))
        history = smart.fit(x, np.arange(32) % 3, batch_size=8, epochs=2, verbose=0, callbacks=[callback]).history
        assert all(math.isfinite(v) for v in history["loss"]) and history["loss"][1] < history["loss"][0]
    finally:
        keras.mixed_precision.set_global_policy(policy)


def test_tradeoff_accuracies_take_integer_or_one_hot_labels_and_restore_the_tradeoff():
    smart = _mlp()
    keras_smart.set_tradeoff(smart, 0.4)
    x = np.random.default_rng(0).random((10, 6)).astype("float32")
    y = np.arange(10) % 3
    attack = keras_smart.AttackConfig(kind="fgsm", eps=0.05)
    sparse = keras_smart.callbacks.tradeoff_accuracies(smart, x, y, (0.0, 1.0), attack, batch_size=4)
    one_hot = keras_smart.callbacks.tradeoff_accuracies(smart, x, np.eye(3, dtype="float32")[y], (0.0, 1.0), attack, batch_size=4)
    assert sparse == one_hot
    assert set(sparse) == {"clean_acc@0", "fgsm_acc@0", "clean_acc@1", "fgsm_acc@1"}
    assert keras_smart.get_tradeoff(smart) == pytest.approx(0.4)


def test_adversarial_training_needs_one_input_and_one_output():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, name="fc")(inputs)
    smart = keras_smart.convert(keras.Model(inputs, [h, keras.layers.Dense(2, name="aux")(h)]))
    with pytest.raises(ValueError, match="one input and one output.*has 1 input\(s\) and 2 output\(s\)"):
        smart.enable_adversarial(_fgsm_config())
