"""_compat: the flavour rule, the backend check, and every private Keras API it wraps, per flavour.

A Keras release that moves one of these fails here, by name, rather than deep inside training.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from tests.models import keras


def _run_python(code, **env):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)


# Each case starts a Python process that imports TensorFlow; they do not depend on the flavour the
# suite runs in, so they run in the Keras 3 run only.
_SUBPROCESS = pytest.mark.skipif(_compat.IS_LEGACY, reason="flavour-independent; runs in the Keras 3 run")


@_SUBPROCESS
@pytest.mark.parametrize("value", ["True", "yes"])  # TensorFlow's legacy spelling, and one it ignores
def test_flavour_follows_tensorflows_reading_of_tf_use_legacy_keras(value):
    result = _run_python(
        "import tensorflow as tf, keras_smart; print(keras_smart.KERAS_FLAVOUR, tf.keras.__name__.split('.')[0])",
        TF_USE_LEGACY_KERAS=value,
    )
    assert result.returncode == 0, result.stderr
    ours, tensorflows = result.stdout.split()
    assert ours == ("tf_keras" if tensorflows == "tf_keras" else "keras3")
    assert ours == ("tf_keras" if value in ("1", "True") else "keras3")


@_SUBPROCESS
def test_a_jax_keras_backend_is_refused_at_import_in_one_line():
    pytest.importorskip("jax")  # Keras 3's jax (and numpy) backends need JAX installed
    result = _run_python("import keras_smart", KERAS_BACKEND="jax", TF_USE_LEGACY_KERAS="0")
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: keras_smart needs Keras's TensorFlow backend")
    assert "'jax'" in last_line and "KERAS_BACKEND=tensorflow" in last_line


def _compiled_classifier():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(inputs))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_training_loss_is_what_fit_logs_as_loss():
    """The train step's loss goes into the metric that `fit` and `evaluate` report as "loss"."""
    model = _compiled_classifier()
    x, y = np.random.default_rng(0).random((8, 4)).astype("float32"), np.arange(8) % 3
    x, y = tf.constant(x), tf.constant(y)
    expected = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["loss"]
    for metric in model.metrics:
        metric.reset_state()
    loss = _compat.training_loss(model, x, y, model(x), None, 8)
    logged = {m.name: float(m.result()) for m in model.metrics}["loss"]
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert logged == pytest.approx(expected, rel=1e-6)


def test_training_loss_counts_the_extra_term_in_the_loss_and_the_log():
    model = _compiled_classifier()
    x, y = tf.ones((4, 4)), tf.constant(np.arange(4) % 3)
    plain = float(_compat.training_loss(model, x, y, model(x), None, 4))
    for metric in model.metrics:
        metric.reset_state()
    loss = _compat.training_loss(model, x, y, model(x), None, 4, extra_loss=tf.constant(0.5))
    assert float(loss) == pytest.approx(plain + 0.5, rel=1e-6)
    assert {m.name: float(m.result()) for m in model.metrics}["loss"] == pytest.approx(plain + 0.5, rel=1e-6)


def test_private_keras_attributes_it_reads_still_exist():
    inputs = keras.Input((3, 4))
    lam = keras.layers.Lambda(lambda t: t * 2.0, output_shape=(3, 4), name="double")(inputs)
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2, name="mha")
    model = keras.Model(inputs, attention(lam, lam))
    assert _compat.is_functional(model) and isinstance(model, _compat.Functional)
    assert {l.name for l in _compat.flatten_layers(model)} >= {"double", "mha"}
    assert tuple(_compat.lambda_output_shape(model.get_layer("double"))) == (3, 4)
    projections = _compat.attention_projections(attention)
    assert set(projections) >= {"query", "key", "value", "attention_output"}
    assert all(isinstance(p, keras.layers.EinsumDense) for p in projections.values())
    nodes = _compat.graph_nodes(model)  # the staged export cuts graphs with it: inputs first, each call once
    assert [layer.name for layer, _, _ in nodes][1:] == ["double", "mha"]
    _, mha_inputs, mha_outputs = nodes[-1]
    assert [t.shape[1:] for t in mha_inputs][:1] == [(3, 4)] and mha_outputs[0] is model.outputs[0]


def test_weight_name_is_the_short_name_in_both_flavours():
    layer = keras.layers.Dense(2, name="fc")
    layer.build((None, 3))
    assert sorted(_compat.weight_name(w) for w in layer.weights) == ["bias", "kernel"]
    assert keras_smart.KERAS_FLAVOUR == _compat.FLAVOUR
