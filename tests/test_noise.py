"""keras_smart.noise: EnResNet noise after residual additions, ensembles, and how both are evaluated."""

import os
import warnings

import numpy as np
import pytest

import keras_smart
from keras_smart import _compat
from keras_smart import layers as cl
from keras_smart import noise
from keras_smart.evaluation import plan as plan_lib
from keras_smart.evaluation import suite

keras = _compat.keras


def _block(x, name, operator=False):
    h = keras.layers.Conv2D(4, 3, padding="same", name=f"{name}_conv")(x)
    h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
    return x + h if operator else keras.layers.Add(name=f"{name}_add")([x, h])


def _residual_cnn(name="res", classes=3):
    """8x8x3 -> stem -> residual block (Add) -> nested residual block (`x + h`) -> `h + 3.0` (no residual) -> logits."""
    inputs = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    h = _block(h, "block1")
    inner_in = keras.Input((8, 8, 4), name="inner_in")
    inner = keras.Model(inner_in, _block(inner_in, "block2", operator=True), name="inner")
    h = inner(h)
    h = keras.layers.ReLU(name="relu")(h + 3.0)  # a constant shift: not a residual addition
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(h), name=name)


def _x(n=4):
    return np.random.default_rng(0).random((n, 8, 8, 3)).astype("float32")


def _noise_layers(model):
    return sorted(l.name for l in _compat.flatten_layers(model) if isinstance(l, cl.NoiseInjection))


def _random_ops(path):
    """The random operators of a LiteRT file. (Under the suite's fixed seeds a file that draws noise
    could still match Keras draw for draw, so parity alone does not show the noise was left out.)"""
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel

    return sorted({op["op_name"] for op in Interpreter(str(path))._get_ops_details() if "RANDOM" in op["op_name"]})


def _close_under_expected_noise(a, b, x, atol=1e-5):
    with cl.expected_noise():
        return np.allclose(a(x), b(x), atol=atol)


# --- inject_noise ---------------------------------------------------------------------------------


def test_inject_noise_follows_every_residual_addition_nested_ones_too():
    model, x = _residual_cnn(), _x()
    noisy = noise.inject_noise(model, sigma=0.1, seed=7)
    assert len(_noise_layers(noisy)) == 2 and "block1_add_noise" in _noise_layers(noisy)
    assert isinstance(noisy.get_layer("inner").layers[-1], cl.NoiseInjection)  # after the nested `x + h`
    assert sorted(l.seed for l in _compat.flatten_layers(noisy) if isinstance(l, cl.NoiseInjection)) == [7, 8]
    assert _noise_layers(model) == []  # the input model is not modified
    assert _close_under_expected_noise(noisy, model, x)
    assert np.abs(noisy(x).numpy() - model(x).numpy()).max() > 0  # on at inference


def test_inject_noise_after_named_layers():
    model, x = _residual_cnn(), _x()
    noisy = noise.inject_noise(model, sigma=0.5, after=["stem", "block2_conv"])
    assert _noise_layers(noisy) == ["block2_conv_noise", "stem_noise"]
    assert _close_under_expected_noise(noisy, model, x)


def test_inject_noise_errors():
    model = _residual_cnn()
    with pytest.raises(ValueError, match="`after` names no layer.*'stme'.*stem"):
        noise.inject_noise(model, after=["stme"])
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
    with pytest.raises(ValueError, match="no residual addition.*after="):
        noise.inject_noise(plain)
    assert _noise_layers(noise.inject_noise(plain, after=["fc"])) == ["fc_noise"]  # a Sequential, by name
    with pytest.raises(ValueError, match="`sigma` must be"):
        noise.inject_noise(model, sigma=-1.0)
    with pytest.raises(TypeError, match="Functional or Sequential"):
        noise.inject_noise(keras.layers.Dense(2))
    with pytest.raises(TypeError, match="`after` must be"):
        noise.inject_noise(model, after=[3])
    with pytest.raises(ValueError, match="already has NoiseInjection"):
        noise.inject_noise(noise.inject_noise(model))


def test_inject_noise_keeps_a_smart_model_at_its_tradeoff_and_strip_keeps_the_noise():
    smart = keras_smart.convert(_residual_cnn(), "float", seed=0)
    keras_smart.set_tradeoff(smart, 0.4)
    noisy = noise.inject_noise(smart, seed=0)
    assert type(noisy).__name__ == "SmartModel" and keras_smart.get_tradeoff(noisy) == pytest.approx(0.4)
    keras_smart.set_tradeoff(noisy, 0.7)
    assert {round(float(l.current_tradeoff()), 6) for l in noisy.conditional_layers()} == {0.7}
    assert keras_smart.get_tradeoff(smart) == pytest.approx(0.4)
    keras_smart.set_tradeoff(smart, 0.7)
    assert _close_under_expected_noise(noisy, smart, _x())
    stripped = keras_smart.strip(noisy)
    assert _noise_layers(stripped) == _noise_layers(noisy)
    assert _close_under_expected_noise(stripped, noisy, _x())


# --- ensemble -------------------------------------------------------------------------------------


def _members(plain=True):
    noisy = noise.inject_noise(_residual_cnn("b"), seed=1)
    smart = keras_smart.convert(_residual_cnn("c"), "smart")
    return ((_residual_cnn("a"),) if plain else ()) + (noisy, smart)


def test_ensemble_averages_the_members_logits_and_binds_one_tradeoff():
    members, x = _members(), _x()
    combined = noise.ensemble(members, name="trio")
    assert type(combined).__name__ == "SmartModel" and combined.name == "trio"
    assert [l.name for l in combined.layers][1:4] == ["member_1", "member_2", "member_3"]
    names = [l.name for l in _compat.flatten_layers(combined)]
    assert len(names) == len(set(names))
    with cl.expected_noise():
        expected = np.mean([m(x).numpy() for m in members], axis=0)
        np.testing.assert_allclose(combined(x).numpy(), expected, atol=1e-5)
    keras_smart.set_tradeoff(combined, 1.0)
    assert {float(l.current_tradeoff()) for l in combined.conditional_layers()} == {1.0}
    plain_only = noise.ensemble(members[:2])  # a plain and a noisy member
    assert not isinstance(plain_only, keras_smart.SmartModel) and plain_only.name == "ensemble"


def test_ensemble_members_built_with_a_list_of_one_output():
    """`keras.Model(inputs, [logits])` returns a list of one: the member's tensor is averaged."""
    base = _residual_cnn("listed")
    listed = keras_smart.SmartModel(base.inputs, [base.outputs[0]], name="listed")
    combined, x = noise.ensemble([listed, base]), _x()
    np.testing.assert_allclose(combined(x).numpy(), base(x).numpy(), atol=1e-5)


def test_ensemble_members_may_hold_lambda_layers():
    inputs = keras.Input((4,))
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(doubled))
    x = np.random.default_rng(0).random((3, 4)).astype("float32")
    np.testing.assert_allclose(noise.ensemble([model, model])(x), model(x), atol=1e-6)


def test_ensemble_trains_saves_and_exports(tmp_path):
    combined, x = noise.ensemble(_members(plain=False)), _x(8)
    y = np.arange(8) % 3
    combined.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in combined.get_weights()]
    history = combined.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, combined.get_weights()))
    path = os.path.join(tmp_path, "ensemble.keras")
    combined.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded).__name__ == "SmartModel" and _noise_layers(loaded) == _noise_layers(combined)
    assert _close_under_expected_noise(loaded, combined, x)
    result = keras_smart.export.to_tflite(combined, os.path.join(tmp_path, "ensemble.tflite"), tradeoff=0.0,
                                          check_data=x)
    assert result.max_abs_diff <= 1e-4 and not _random_ops(os.path.join(tmp_path, "ensemble.tflite"))


def test_ensemble_errors():
    model = _residual_cnn()
    other_input = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)], name="small")
    other_output = _residual_cnn("wide", classes=5)
    with pytest.raises(ValueError, match="input shape.*'res': \\(None, 8, 8, 3\\).*'small': \\(None, 4, 4, 3\\)"):
        noise.ensemble([model, other_input])
    with pytest.raises(ValueError, match="output shape.*'res': \\(None, 3\\).*'wide': \\(None, 5\\)"):
        noise.ensemble([model, other_output])
    with pytest.raises(ValueError, match="empty"):
        noise.ensemble([])
    with pytest.raises(TypeError, match="models\\[1\\]"):
        noise.ensemble([model, keras.layers.Dense(3)])
    with pytest.raises(TypeError, match="list of Keras models"):
        noise.ensemble(model)


# --- evaluation -----------------------------------------------------------------------------------


def test_noisy_models_are_evaluated_with_eot_at_every_tradeoff_and_reproduce():
    # Noise on the logits too: the untrained model's predictions then depend on the draws.
    smart = noise.inject_noise(keras_smart.convert(_residual_cnn(), "smart"), sigma=1.0, after=["block1_add", "logits"])
    x, y = _x(16), np.arange(16) % 3

    def run(model, seed=5, **options):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an untrained model: masking checks may fire
            return keras_smart.evaluate_tradeoff(
                model, (x, y), attacks=["fgsm"], eps=0.1, progress=False, seed=seed, **options
            )

    first, second = run(smart, tradeoffs=(0.0,)), run(smart, tradeoffs=(0.0,))
    assert first.rows == second.rows  # the same seed: the same draws
    draws = [np.argmax(smart(x).numpy(), -1) for _ in range(2)]
    assert np.any(draws[0] != draws[1])  # the draws do reach the predictions, so equal rows mean equal draws
    randomness = first.settings["randomness"]
    assert randomness["mode"] == "eot" and randomness["eot_samples"] == suite.DEFAULT_EOT_SAMPLES
    assert randomness["randomised_rows"] == [0.0] and "NoiseInjection" in randomness["note"]
    assert first.settings["attacks"]["fgsm"]["eot_samples"] == suite.DEFAULT_EOT_SAMPLES

    def plan(model, noise_mode, tradeoffs=None):
        return plan_lib.make_plan(
            model, tradeoffs=tradeoffs, attacks=["fgsm"], eps=0.1, norm="linf", max_examples=None, batch_size=8,
            seed=0, eot_samples=None, noise=noise_mode, attack_options=None, input_range=(0.0, 1.0),
        )

    plain = plan(noise.inject_noise(_residual_cnn()), "sample")  # not a SmartModel: its one row is randomised
    assert plain.randomised(None) and plain.eot_for(None) == suite.DEFAULT_EOT_SAMPLES
    expected = plan(smart, "expected", tradeoffs=(0.0, 1.0))
    assert not expected.randomised(0.0) and not expected.randomised(1.0) and expected.has_noise


def test_a_noisy_multi_exit_model_exports_a_staged_bundle_at_the_noise_expectation(tmp_path):
    """Every stage file is traced with the noise at its expectation: no random operator in any file."""
    noisy = noise.inject_noise(_residual_cnn("staged"), sigma=0.5, seed=3)
    multi = keras_smart.exits.attach(noisy, after=["block1_add_noise"])
    x = _x(32)
    policy = keras_smart.exits.calibrate(multi, (x, np.zeros(32, "int64")), shares=[0.5, 0.5])
    keras_smart.export.bundle(multi, str(tmp_path / "bundle"), policy=policy, check_data=x)
    for name in ("stage1.tflite", "stage2.tflite"):
        assert not _random_ops(tmp_path / "bundle" / name), name
