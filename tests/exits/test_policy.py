"""entropy / first_confident / calibrate / ExitPolicy: shares and budgets met on real digits, routing consistent."""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import exits
from keras_smart.exits import calibration
from tests.models import keras

# On held-out digits the expected MACs differ from the budget met on the calibration digits: measured up to
# 0.036 over the budgets tested below (0.040 at budget 0.45), in both flavours, always cheaper (the second 500
# test digits are easier for the exits), for 500 calibration digits.
HELD_OUT_TOLERANCE = 0.05


def _head(features, classes):
    return keras.layers.Dense(classes)(keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(features)))


@pytest.fixture(scope="module")
def trained():
    """A small CNN with exits after both convolutions, trained for two epochs on 2,000 digits (the sum of
    every exit's cross-entropy; about 82/82/88% test accuracy per exit), and 1,000 test digits: the first
    half to calibrate on, the second to check on."""
    keras.utils.set_random_seed(0)
    x, y = keras_smart.data.digits("train")
    inputs = keras.Input((28, 28, 1), name="image")
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.Dense(64, activation="relu", name="fc")(keras.layers.Flatten(name="flatten")(h))
    trunk = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h), name="digits")
    model = exits.attach(trunk, after=["conv1", "conv2"], head=_head)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(3e-3), loss=[loss] * 3)
    model.fit(x[:2000], [y[:2000]] * 3, batch_size=64, epochs=2, verbose=0)
    x_test, y_test = keras_smart.data.digits("test")
    return model, (x_test[:500], y_test[:500]), (x_test[500:], y_test[500:])


def test_entropy_is_the_softmax_entropy_in_nats():
    logits = np.random.default_rng(0).normal(0, 3, (5, 7)).astype("float32")
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(exits.entropy(logits), -(p * np.log(p)).sum(-1), rtol=1e-5)
    assert exits.entropy(tf.zeros([1, 4])).numpy()[0] == pytest.approx(math.log(4))


def test_first_confident_picks_the_first_exit_below_its_threshold():
    rng = np.random.default_rng(1)
    logits = [rng.normal(0, s, (200, 5)).astype("float32") for s in (1.0, 2.0, 4.0)]
    thresholds = [1.2, 0.9]
    entropies = np.stack([exits.entropy(l).numpy() for l in logits[:2]])
    expected = [next((k for k in range(2) if entropies[k, i] < thresholds[k]), 2) for i in range(200)]
    got = exits.first_confident([tf.constant(l) for l in logits], thresholds)
    assert got.dtype == tf.int32 and got.numpy().tolist() == expected
    assert 0 < np.mean(np.array(expected) == 0) < 1 and 0 < np.mean(np.array(expected) == 2) < 1
    with pytest.raises(ValueError, match="one value per side exit: 2"):
        exits.first_confident(logits, [1.0])


def test_thresholds_separate_neighbouring_float32_entropies_and_ties_give_the_nearest_count():
    e = np.float32(0.5)
    close = np.array([[e, np.nextafter(e, np.float32(1)), np.float32(0.7), np.float32(0.9)]], np.float32)
    thresholds, counts = calibration.thresholds_for(close, (0.25, 0.75), classes=10)
    assert counts == [1, 3] and np.float32(thresholds[0]) > close[0, 0] and not np.float32(thresholds[0]) > close[0, 1]
    tied = np.array([[0.1, 0.3, 0.3, 0.3, 0.8]], np.float32)
    assert calibration.thresholds_for(tied, (0.4, 0.6), classes=10)[1] == [1, 4]  # 2 wanted: 1 is nearer than 4
    assert calibration.thresholds_for(tied, (0.8, 0.2), classes=10)[1] == [4, 1]
    everything = calibration.thresholds_for(tied, (1.0, 0.0), classes=10)
    assert everything[1] == [5, 0] and everything[0][0] > math.log(10)  # takes any input, also unseen ones


def test_shares_are_met_exactly_on_the_calibration_digits(trained):
    model, calibration_data, held_out = trained
    policy = exits.calibrate(model, calibration_data, shares=[0.2, 0.3, 0.5])
    np.testing.assert_array_equal(policy.exit_shares(model, calibration_data[0]), [0.2, 0.3, 0.5])
    assert policy.exits == ("conv1", "conv2") and policy.macs == exits.exit_macs(model)
    assert policy.model_name == model.name and policy.budget is None and policy.tradeoff is None
    shares = policy.exit_shares(model, held_out[0])
    assert shares.sum() == pytest.approx(1.0) and np.abs(shares - [0.2, 0.3, 0.5]).max() < 0.1
    assert policy.expected_macs(model, held_out[0]) == pytest.approx(float(shares @ policy.macs) / policy.macs[-1])


@pytest.mark.parametrize("budget", [0.6, 0.75, 0.9])
def test_a_budget_is_met_within_one_example_and_holds_on_held_out_digits(trained, budget):
    model, calibration_data, held_out = trained
    policy = exits.calibrate(model, tf.data.Dataset.from_tensor_slices(calibration_data).batch(100), budget=budget)
    macs = policy.macs
    one_example = (macs[-1] - macs[0]) / (len(calibration_data[0]) * macs[-1])
    met = policy.expected_macs(model, calibration_data)
    assert budget - one_example <= met <= budget
    assert abs(policy.expected_macs(model, held_out[0]) - budget) <= HELD_OUT_TOLERANCE
    assert policy.budget == budget
    shares = policy.exit_shares(model, calibration_data[0])
    rate = shares[0]  # the budget family: every side exit takes the same share of the inputs reaching it
    assert shares[1] == pytest.approx(rate * (1 - rate), abs=2 / len(calibration_data[0]))


def test_predict_routes_like_first_confident_and_keeps_the_trade_off(trained):
    model, calibration_data, _ = trained
    smart = keras_smart.convert(model, "float")
    keras_smart.set_tradeoff(smart, 0.3)
    policy = exits.calibrate(smart, calibration_data, budget=0.8)
    assert policy.tradeoff == pytest.approx(0.3) and keras_smart.get_tradeoff(smart) == pytest.approx(0.3)
    assert exits.calibrate(smart, calibration_data, budget=0.8) == policy  # noise at its expectation: reproducible
    x = calibration_data[0][:300]
    class_ids, exit_ids = policy.predict(smart, x, batch_size=64)
    assert class_ids.dtype == np.int64 and exit_ids.dtype == np.int64 and class_ids.shape == (300,)
    with keras_smart.layers.expected_noise():
        logits = [o.numpy() for o in smart(x)]
    np.testing.assert_array_equal(exit_ids, policy.route(logits).numpy())
    np.testing.assert_array_equal(class_ids, np.stack([l.argmax(-1) for l in logits])[exit_ids, np.arange(300)])
    assert len(set(exit_ids.tolist())) == 3 and keras_smart.get_tradeoff(smart) == pytest.approx(0.3)
    plain_ids, _ = policy.predict(keras_smart.strip(smart), x)  # what export computes
    assert np.mean(plain_ids == class_ids) >= 0.99


def test_a_policy_round_trips_through_json_and_refuses_other_models(trained):
    model, calibration_data, _ = trained
    policy = exits.calibrate(model, calibration_data, budget=0.7)
    again = exits.ExitPolicy.from_json(policy.to_json())
    assert again == policy and isinstance(again.thresholds, tuple)
    with pytest.raises(ValueError, match="Not an ExitPolicy"):
        exits.ExitPolicy.from_json('{"thresholds": [1.0]}')
    trunk = keras.Model(model.inputs[0], model.outputs[-1], name="digits")
    other_layout = exits.attach(trunk, after=["conv1"], head=_head)
    with pytest.raises(ValueError, match=r"exits after \['conv1', 'conv2'\].*outputs: policy 3, model 2"):
        policy.predict(other_layout, calibration_data[0][:4])
    renamed = exits.attach(keras.Model(trunk.inputs[0], trunk.outputs[0], name="other"), ["conv1", "conv2"], _head)
    with pytest.raises(ValueError, match="name: policy 'digits', model 'other'"):
        policy.check_model(renamed)
    with pytest.raises(ValueError, match="not a multi-exit model"):
        policy.check_model(trunk)
    default_heads = exits.attach(trunk, after=["conv1", "conv2"])
    with pytest.raises(ValueError, match="macs: policy"):
        policy.exit_shares(default_heads, calibration_data[0][:4])


def test_calibrate_refuses_bad_budgets_and_shares(trained):
    model, calibration_data, _ = trained
    x = calibration_data[0][:50]
    for budget in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"`budget` must be in \(0, 1\]"):
            exits.calibrate(model, x, budget=budget)
    with pytest.raises(TypeError, match="`budget` must be a real number"):
        exits.calibrate(model, x, budget="x")
    cheapest = exits.exit_macs(model)[0] / exits.exit_macs(model)[-1]
    with pytest.raises(ValueError, match=f"at least {cheapest:.6g}"):
        exits.calibrate(model, x, budget=cheapest / 2)
    with pytest.raises(ValueError, match="sum to 1"):
        exits.calibrate(model, x, shares=[0.2, 0.2, 0.5])
    with pytest.raises(ValueError, match="one share per exit: 3"):
        exits.calibrate(model, x, shares=[0.5, 0.5])
    with pytest.raises(ValueError, match="`shares\\[i\\]` must be >= 0"):
        exits.calibrate(model, x, shares=[-0.5, 0.5, 1.0])
    with pytest.raises(ValueError, match="exactly one of `budget`"):
        exits.calibrate(model, x)
    with pytest.raises(ValueError, match="exactly one of `budget`"):
        exits.calibrate(model, x, budget=0.5, shares=[0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="not a multi-exit model"):
        exits.calibrate(keras.Model(model.inputs[0], model.outputs[-1]), x, budget=0.5)
