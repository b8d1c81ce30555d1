"""The adversarial train step: traced once across `fit` calls, fixed shapes (XLA), per-example lam."""

import numpy as np
import pytest

import keras_smart
from keras_smart import training
from keras_smart.layers import dual_batch_norm
from tests.models import keras


def _conv_model(method, **options):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))  # Keras's default momentum
    h = keras.layers.SeparableConv2D(4, 3, padding="same")(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    smart = keras_smart.convert(model, method, **options)
    if method in ("smart", "floats"):
        density = (0.6, 0.6) if method == "smart" else 0.6
        keras_smart.design_masks(smart, score="random", density=density, max_overlap=0.5, seed=0)
    return smart


def _data(n=24):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, (n, 1))  # keras.datasets' [N, 1] labels


def _fit(smart, *, jit_compile, sampling="element", epochs=1, learning_rate=0.05):
    smart.compile(
        keras.optimizers.SGD(learning_rate), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    # XLA's stateless random kernels draw other numbers than TensorFlow's own from one seed: no
    # random start, and trade-offs whose draws cannot differ (every lam > 0 is 1). L2 steps follow
    # the gradient continuously, where L-inf sign steps would amplify XLA's rounding differences.
    callback = keras_smart.callbacks.AdversarialCallback(
        attack=keras_smart.AttackConfig(eps=1.0, steps=2, norm="l2", random_start=False), tradeoffs=(0.0, 1.0),
        sampling=sampling, recalibrate=False,
    )
    x, y = _data()
    return smart.fit(x, y, batch_size=12, epochs=epochs, shuffle=False, verbose=0, callbacks=[callback]).history


_CASES = [
    ("smart", {}, "element"),
    ("smart", {}, "batch"),
    ("smart", {"tradeoff_mode": "blend"}, "element"),
    ("float", {"seed": 1}, "element"),
    ("floats", {"seed": 1}, "element"),
    ("oat", {}, "element"),
]


@pytest.mark.slow
@pytest.mark.parametrize("method, options, sampling", _CASES, ids=[f"{m}-{o.get('tradeoff_mode', '')}-{s}" for m, o, s in _CASES])
def test_a_jit_compiled_adversarial_fit_matches_the_non_jit_one(method, options, sampling):
    runs = []
    for jit_compile in (False, True):
        smart = _conv_model(method, **options)
        for layer in smart.conditional_layers():  # noise off: both runs compute alike
            for name in layer.kernel_names if getattr(layer, "noisy", False) else ():
                getattr(layer, layer.noise_scale_name(name)).assign(0.0)
        history = _fit(smart, jit_compile=jit_compile, sampling=sampling)
        runs.append((history, [w.numpy() for w in smart.weights]))
    (plain, plain_weights), (jit, jit_weights) = runs
    np.testing.assert_allclose(jit["loss"], plain["loss"], rtol=1e-4)
    np.testing.assert_allclose(jit["adv_accuracy"], plain["adv_accuracy"], atol=1e-6)
    for a, b in zip(jit_weights, plain_weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_repeated_fit_calls_trace_the_adversarial_step_once(monkeypatch):
    traces = []
    original = training.SmartModel._batch_groups

    def counting(self, *args):
        traces.append(self.adversarial_config.attack.eps)
        return original(self, *args)

    monkeypatch.setattr(training.SmartModel, "_batch_groups", counting)
    smart = _conv_model("smart")
    smart.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    fit = lambda eps: smart.fit(x, y, batch_size=12, epochs=1, verbose=0, callbacks=[  # noqa: E731
        keras_smart.callbacks.AdversarialCallback(attack=keras_smart.AttackConfig(eps=eps, steps=1), recalibrate=False)])
    fit(0.1)
    fit(0.1)
    assert traces == [0.1], traces
    smart.evaluate(x, y, verbose=0)
    smart.predict(x, verbose=0)
    smart.fit(x, y, batch_size=12, epochs=1, verbose=0)  # ordinary training in between
    fit(0.1)
    assert traces == [0.1], "evaluate, predict and a plain fit leave the traced step alone"
    fit(0.2)
    fit(0.2)
    assert traces == [0.1, 0.2], "a changed configuration retraces once"
    smart.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fit(0.2)
    assert traces == [0.1, 0.2, 0.2], "a new compile traces afresh"


def test_a_batch_too_small_for_adversarial_rows_trains_its_clean_rows_only():
    smart = _conv_model("smart")
    smart.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    bn = next(l for l in smart.conditional_layers() if hasattr(l, "adv_moving_mean"))
    before = {name: getattr(bn, name).numpy().copy() for name in ("moving_mean", "adv_moving_mean")}
    x, y = _data(3)
    callback = keras_smart.callbacks.AdversarialCallback(attack=keras_smart.AttackConfig(eps=0.1, steps=1), recalibrate=False)
    history = smart.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=[callback]).history  # each batch: 1 clean
    assert np.isfinite(history["loss"][0])
    assert not np.allclose(bn.moving_mean.numpy(), before["moving_mean"])
    np.testing.assert_array_equal(bn.adv_moving_mean.numpy(), before["adv_moving_mean"])


@pytest.mark.parametrize("tradeoffs, sampling, grouped", [
    ((0.0, 0.5, 1.0), "element", True),  # a group of rows with lam 0.5 and 1
    ((0.0, 1.0), "element", False),  # every adversarial row has lam 1: one batch already
    ((0.0, 0.5, 1.0), "batch", False),  # one lam per batch
])
def test_the_step_hands_batch_norm_its_lam_groups_where_rows_can_differ(monkeypatch, tradeoffs, sampling, grouped):
    """Batch-norm pools its statistics over rows: mixed-lam rows must be normalised per lam value
    (the digits demo lost 18 AutoAttack points at lam = 1 when they were not)."""
    calls = []
    original = dual_batch_norm.DualBatchNormalization._normalize_by_tradeoff

    def counting(self, *args):
        calls.append(self.name)
        return original(self, *args)

    monkeypatch.setattr(dual_batch_norm.DualBatchNormalization, "_normalize_by_tradeoff", counting)
    smart = _conv_model("smart")
    smart.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    callback = keras_smart.callbacks.AdversarialCallback(
        attack=keras_smart.AttackConfig(eps=0.1, steps=1), tradeoffs=tradeoffs, sampling=sampling, recalibrate=False
    )
    history = smart.fit(x, y, batch_size=12, epochs=1, verbose=0, callbacks=[callback]).history
    assert np.isfinite(history["loss"][0])
    assert bool(calls) == grouped, calls
