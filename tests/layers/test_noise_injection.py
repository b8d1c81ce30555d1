"""NoiseInjection: x + sigma * std(x) * N(0, I) per example, on at inference, off under expected_noise()."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_smart import _compat
from keras_smart import layers as cl
from keras_smart.evaluation import forward

keras = _compat.keras


def _spread_inputs():
    """[4, 64, 64, 4] inputs whose examples have very different spreads (std 1, 3, 5, 7) and offsets."""
    scales = np.array([1.0, 3.0, 5.0, 7.0], np.float32)[:, None, None, None]
    x = np.random.default_rng(0).normal(size=(4, 64, 64, 4)).astype("float32")
    return tf.constant(x * scales + 2.0 * scales)


def test_noise_has_mean_zero_and_std_sigma_times_each_examples_std():
    x = _spread_inputs()
    diff = (cl.NoiseInjection(sigma=0.2, seed=1)(x) - x).numpy().reshape(4, -1)
    example_std = x.numpy().reshape(4, -1).std(axis=1)
    n = diff.shape[1]
    # mean: within 5 standard errors of 0; std: per example, within 3% (the standard error is ~0.6%)
    assert np.all(np.abs(diff.mean(axis=1)) < 5 * 0.2 * example_std / np.sqrt(n))
    np.testing.assert_allclose(diff.std(axis=1), 0.2 * example_std, rtol=0.03)


def test_sigma_zero_is_the_identity():
    x = _spread_inputs()
    np.testing.assert_array_equal(cl.NoiseInjection(sigma=0.0)(x).numpy(), x.numpy())


def test_noise_is_on_at_inference_and_redrawn_on_every_call():
    layer, x = cl.NoiseInjection(sigma=0.1, seed=0), _spread_inputs()
    inference, again, training = (layer(x, training=t).numpy() for t in (False, False, True))
    assert np.abs(inference - x.numpy()).max() > 0 and np.abs(training - x.numpy()).max() > 0
    assert np.abs(inference - again).max() > 0


def test_expected_noise_makes_it_the_identity():
    layer, x = cl.NoiseInjection(sigma=0.5, seed=0), _spread_inputs()
    with cl.expected_noise():
        np.testing.assert_array_equal(layer(x).numpy(), x.numpy())
    traced = tf.function(lambda v: layer(v))
    with cl.expected_noise():  # read at trace time
        np.testing.assert_array_equal(traced(x).numpy(), x.numpy())


def test_same_seed_draws_the_same_noise_in_a_seeded_function():
    x = _spread_inputs()
    draws = []
    for _ in range(2):
        layer = cl.NoiseInjection(sigma=0.1, seed=4)
        fn = forward.compile_fn(lambda v, layer=layer: layer(v), seed=11)
        draws.append((fn(x).numpy(), fn(x).numpy()))
    np.testing.assert_array_equal(draws[0][0], draws[1][0])
    np.testing.assert_array_equal(draws[0][1], draws[1][1])
    assert np.abs(draws[0][0] - draws[0][1]).max() > 0  # each call draws anew
    other = cl.NoiseInjection(sigma=0.1, seed=5)
    assert np.abs(forward.compile_fn(lambda v: other(v), seed=11)(x).numpy() - draws[0][0]).max() > 0


@pytest.mark.parametrize(
    "sigma, error", [(-0.1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("0.1", TypeError),
                     (None, TypeError), (True, TypeError)],
)
def test_bad_sigma_is_refused(sigma, error):
    with pytest.raises(error, match="`sigma` must be"):
        cl.NoiseInjection(sigma=sigma)


def test_bad_seed_is_refused():
    with pytest.raises(TypeError, match="seed"):
        cl.NoiseInjection(seed="a")


def test_config_and_keras_file_round_trip(tmp_path):
    layer = cl.NoiseInjection(sigma=0.3, seed=2, name="noise")
    twin = cl.NoiseInjection.from_config(layer.get_config())
    assert (twin.sigma, twin.seed, twin.name) == (0.3, 2, "noise")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2)(cl.NoiseInjection(sigma=0.3, seed=2, name="noise")(inputs)))
    path = os.path.join(tmp_path, "noisy.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: the class is registered
    reloaded = loaded.get_layer("noise")
    assert type(reloaded) is cl.NoiseInjection and (reloaded.sigma, reloaded.seed) == (0.3, 2)
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    with cl.expected_noise():
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
