"""Batch-norm statistics per path: what training moves, and `recalibrate_batchnorm`."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart.layers import base
from tests.models import keras

ATTACK = keras_smart.AttackConfig(eps=0.3, steps=3)


def _bn_cnn(momentum=0.99, seed=0):
    """A small converted CNN with batch-norm at Keras's default settings unless told otherwise."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = inputs
    for i, filters in enumerate((8, 16)):
        h = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = keras.layers.BatchNormalization(momentum=momentum, name=f"bn{i}")(h)
        h = keras.layers.ReLU()(h)
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(h))
    smart = keras_smart.convert(keras.Model(inputs, outputs), "smart")
    smart.compile(
        keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return smart


def _digits(n):
    x, y = keras_smart.data.digits("train")
    return x[:n], y[:n]


def _fit(smart, x, y, epochs, **callback_options):
    callback = keras_smart.callbacks.AdversarialCallback(
        attack=ATTACK, tradeoffs=(0.0, 1.0), clean_share=0.5, **callback_options
    )
    return smart.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[callback])


def _accuracies(smart, x, y, lam):
    """(inference-mode accuracy, training-mode accuracy with statistics held still) at `lam`."""
    keras_smart.set_tradeoff(smart, lam)
    inference = np.mean(np.argmax(smart.predict(x, batch_size=64, verbose=0), -1) == y)
    with base.frozen_statistics():
        logits = np.concatenate([smart(x[i : i + 64], training=True).numpy() for i in range(0, len(x), 64)])
    return inference, np.mean(np.argmax(logits, -1) == y)


def _statistics(smart, name, prefix=""):
    layer = smart.get_layer(name)
    return getattr(layer, prefix + "moving_mean").numpy(), getattr(layer, prefix + "moving_variance").numpy()


@pytest.mark.slow
def test_recalibration_makes_inference_match_training_mode_after_a_short_run():
    x, y = _digits(1000)
    smart = _bn_cnn()  # momentum 0.99: after 32 steps the moving statistics still hold 72% of their start
    _fit(smart, x, y, epochs=2, recalibrate=False)
    _, training_mode = _accuracies(smart, x, y, 0.0)
    keras_smart.recalibrate_batchnorm(smart, (x, y), attack=ATTACK, max_batches=8)
    after, training_mode_after = _accuracies(smart, x, y, 0.0)
    assert training_mode_after == training_mode  # only moving statistics changed
    assert abs(after - training_mode) <= 0.01, (after, training_mode)


@pytest.mark.slow
def test_fit_recalibrates_by_default_and_strip_carries_the_statistics():
    x, y = _digits(512)
    smart = _bn_cnn()
    _fit(smart, x, y, epochs=2)
    inference, training_mode = _accuracies(smart, x, y, 0.0)
    assert abs(inference - training_mode) <= 0.02
    for lam, prefix in ((0.0, ""), (1.0, "adv_")):
        plain = keras_smart.strip(smart, tradeoff=lam)
        np.testing.assert_array_equal(
            plain.get_layer("bn1").moving_variance.numpy(), _statistics(smart, "bn1", prefix)[1]
        )


def _activation_statistics(smart, x, y, lam, adversarial):
    """Mean and variance per channel of conv0's output (bn0's input), on clean or adversarial x."""
    keras_smart.set_tradeoff(smart, lam)
    if adversarial:
        x = keras_smart.attacks.run(ATTACK, lambda t: smart(t, training=False), tf.constant(x), tf.constant(y)).numpy()
    conv = keras.Model(smart.inputs, smart.get_layer("conv0").output)
    out = conv.predict(x, verbose=0)
    return out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))


@pytest.mark.slow
def test_adversarial_path_statistics_come_from_adversarial_examples_not_a_mix():
    # Momentum 0.7 makes the moving statistics follow the last few training batches, so they show
    # which inputs moved them (a clean pass moving them too would make them a 40/60 clean/adversarial mix). The first batch-norm sees conv0(x): its variance on adversarial
    # inputs (eps 0.3 of noise-like perturbation) is far above that on clean digits.
    x, y = _digits(512)
    smart = _bn_cnn(momentum=0.7)
    _fit(smart, x, y, epochs=3, recalibrate=False)
    _, clean_var = _activation_statistics(smart, x, y, 1.0, adversarial=False)
    _, adv_var = _activation_statistics(smart, x, y, 1.0, adversarial=True)
    _, moving_var = _statistics(smart, "bn0", "adv_")
    assert _relative_error(clean_var, adv_var) > 0.3  # the populations differ, so the test can tell them apart
    # Within 10% of the adversarial variance on average (batch-to-batch noise), far from the clean one.
    assert _relative_error(moving_var, adv_var) < 0.1
    assert _relative_error(moving_var, clean_var) > 0.3
    _, clean_moving_var = _statistics(smart, "bn0")
    _, clean_path_var = _activation_statistics(smart, x, y, 0.0, adversarial=False)
    assert _relative_error(clean_moving_var, clean_path_var) < 0.1


def _relative_error(value, reference):
    return float(np.mean(np.abs(value - reference) / reference))


def test_recalibration_computes_exact_pooled_statistics():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(3, name="fc")(inputs)))
    smart = keras_smart.convert(model, "smart")
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (50, 5)).astype("float32")  # 50 rows in batches of 16: unequal last batch
    y = rng.integers(0, 3, 50)
    keras_smart.recalibrate_batchnorm(smart, (x, y), tradeoffs=(0.0,), batch_size=16, max_batches=10)
    h = smart.get_layer("fc")(x).numpy()
    mean, variance = _statistics(smart, "bn")
    np.testing.assert_allclose(mean, h.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(variance, h.var(0), rtol=1e-4)
    np.testing.assert_array_equal(_statistics(smart, "bn", "adv_")[0], 0.0)  # the other path is untouched


def test_recalibration_refuses_bad_input_and_changes_nothing_on_failure():
    smart = _bn_cnn()
    x, y = _digits(64)
    before = _statistics(smart, "bn0")
    with pytest.raises(ValueError, match="needs `attack`"):
        keras_smart.recalibrate_batchnorm(smart, (x, y))
    with pytest.raises(ValueError, match="at most one 0"):
        keras_smart.recalibrate_batchnorm(smart, (x, y), tradeoffs=(0.5, 1.0), attack=ATTACK)
    with pytest.raises(TypeError, match="must be a keras_smart.AttackConfig"):
        keras_smart.recalibrate_batchnorm(smart, (x, y), attack="pgd")
    with pytest.raises(ValueError, match="differ in length"):
        keras_smart.recalibrate_batchnorm(smart, (x, y[:10]), attack=ATTACK)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        keras_smart.recalibrate_batchnorm(smart, (x, y + 20), attack=ATTACK)  # ids out of range for the attack
    np.testing.assert_array_equal(_statistics(smart, "bn0")[0], before[0])
    no_bn = keras_smart.convert(_dense_only(), "smart")
    with pytest.raises(ValueError, match="no trainable dual batch-norm"):
        keras_smart.recalibrate_batchnorm(no_bn, (np.zeros((4, 6)), np.zeros(4)), tradeoffs=(0.0,))


def _dense_only():
    inputs = keras.Input((6,))
    return keras.Model(inputs, keras.layers.Dense(3)(inputs))


def test_adversarial_fit_on_a_generator_warns_instead_of_recalibrating():
    smart = _bn_cnn()
    x, y = _digits(64)

    def batches():
        for i in range(0, 64, 32):
            yield x[i : i + 32], y[i : i + 32]

    callback = keras_smart.callbacks.AdversarialCallback(attack=ATTACK, tradeoffs=(0.0, 1.0))
    before = _statistics(smart, "bn0")[0].copy()
    with pytest.warns(UserWarning, match="not recalibrated"):
        smart.fit(batches(), epochs=1, steps_per_epoch=2, verbose=0, callbacks=[callback])
    assert not np.array_equal(before, _statistics(smart, "bn0")[0])  # training still moved them
