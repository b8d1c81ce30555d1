"""Backbones: plain Keras models that convert accepts, outputting logits."""

import numpy as np

import keras_smart
from keras_smart import backbones


def test_digits_cnn_maps_digits_to_logits_and_converts_exactly():
    model = backbones.digits_cnn(width=8)
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    logits = model(x).numpy()
    assert logits.shape == (4, 10)
    assert not np.allclose(logits.sum(-1), 1.0)  # logits, not probabilities
    smart = keras_smart.convert(model, "smart")
    np.testing.assert_allclose(smart(x).numpy(), logits, atol=1e-5)
    assert {l.name for l in smart.conditional_layers()} == {"conv1", "bn1", "conv2", "bn2", "fc", "logits"}
