"""RelaxSchedule: eta per epoch inside fit, pure Q from `pure_from_epoch`, and its refusals."""

import math

import numpy as np
import pytest

from keras_smart import _compat
from keras_smart import quantization
from keras_smart.layers import quantized

keras = _compat.keras


def _relaxed():
    """A tiny Conv2D -> Dense model, both kernels relaxed towards ternary levels."""
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Flatten(name="flat")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    plain = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    model = quantization.binary_relax(plain, "ternary", classifier=True)
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.random((n, 6, 6, 1)).astype("float32"), rng.integers(0, 3, n)


class _Record(keras.callbacks.Callback):
    """The relax_eta of every quantized layer at the start of each epoch (after the schedule set it)."""

    def __init__(self):
        super().__init__()
        self.etas = []

    def on_epoch_begin(self, epoch, logs=None):
        self.etas.append([float(l.relax_eta.numpy()) for l in quantization.quantized_layers(self.model)])


def test_eta_grows_each_epoch_then_is_pure_and_reaches_the_training_step():
    model = _relaxed()
    x, y = _data()
    record = _Record()
    schedule = quantization.RelaxSchedule(pure_from_epoch=2, eta=0.5, growth=3.0)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[schedule, record])
    assert record.etas == [[0.5, 0.5], [1.5, 1.5], [math.inf, math.inf]]
    assert history.history["relax_eta"] == [0.5, 1.5, math.inf]
    assert [schedule.eta_at(e) for e in (0, 1, 2, 7)] == [0.5, 1.5, math.inf, math.inf]
    # After the pure epoch the model computes with exactly Q(W) ...
    conv = model.get_layer("conv")
    kernel = conv.folded_weights(0.0)["kernel"]
    np.testing.assert_array_equal(kernel, quantized.project(conv.kernel, "ternary").numpy())
    assert len(np.unique(np.abs(kernel))) <= 2  # 0 and one scale
    # ... and the compiled train step read eta (the learning rate is 0: only eta changes the loss).
    pure_loss = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x)))
    assert history.history["loss"][2] == pytest.approx(pure_loss, rel=1e-5)
    assert abs(history.history["loss"][0] - history.history["loss"][2]) > 1e-4


def test_a_schedule_that_never_reaches_pure_q_is_refused_before_training():
    model = _relaxed()
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"never finishes: `fit` runs epochs 0\.\.1"):
        model.fit(*_data(), epochs=2, verbose=0, callbacks=[quantization.RelaxSchedule(pure_from_epoch=2)])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_a_model_without_quantized_layers_is_refused():
    inputs = keras.Input((6, 6, 1))
    plain = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    plain.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="no quantized layers.*binary_relax"):
        plain.fit(*_data(), epochs=3, verbose=0, callbacks=[quantization.RelaxSchedule(pure_from_epoch=1)])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"pure_from_epoch": 0}, ValueError, "`pure_from_epoch` must be an int >= 1"),
        ({"pure_from_epoch": 2.0}, TypeError, "`pure_from_epoch` must be an int"),
        ({"pure_from_epoch": 2, "eta": 0.0}, ValueError, "`eta` must be in \\(0, inf\\)"),
        ({"pure_from_epoch": 2, "eta": -1.0}, ValueError, "`eta` must be"),
        ({"pure_from_epoch": 2, "growth": 0.9}, ValueError, "`growth` must be in \\[1, inf\\)"),
        ({"pure_from_epoch": 2, "growth": "fast"}, TypeError, "`growth` must be a real number"),
    ],
)
def test_bad_settings_are_refused_with_what_was_expected(kwargs, error, match):
    with pytest.raises(error, match=match):
        quantization.RelaxSchedule(**kwargs)
