"""Backbones: plain Keras models that convert accepts, outputting logits."""

import numpy as np
import pytest

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


@pytest.mark.parametrize("name", sorted(backbones.BACKBONES))
def test_every_backbone_builds_for_cifar_shapes_and_converts_exactly(name):
    model = backbones.build(name, (32, 32, 3), 10)
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    smart = keras_smart.convert(model, "smart")
    np.testing.assert_allclose(smart(x).numpy(), model(x).numpy(), atol=1e-4)
    assert model.output.shape[-1] == 10


def test_resnet_depth_and_parameter_count_follow_the_paper():
    assert abs(backbones.resnet(20).count_params() - 0.27e6) < 0.01e6  # He et al.: 0.27M
    with pytest.raises(ValueError, match="6n \\+ 2"):
        backbones.resnet(21)
    with pytest.raises(ValueError, match="Unknown backbone"):
        backbones.build("vgg", (32, 32, 3), 10)
