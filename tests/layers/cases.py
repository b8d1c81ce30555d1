"""For each conditional class: a plain source layer and an input to call both on."""

import numpy as np

from keras_smart import registry
from tests.models import keras

_SOURCES = {
    keras.layers.Conv2D: (lambda: keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="src"), (2, 7, 7, 3)),
    keras.layers.DepthwiseConv2D: (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="src"), (2, 7, 7, 3)),
    keras.layers.SeparableConv2D: (lambda: keras.layers.SeparableConv2D(5, 3, padding="same", name="src"), (2, 6, 6, 3)),
    keras.layers.Dense: (lambda: keras.layers.Dense(5, activation="tanh", name="src"), (2, 4, 6)),
    keras.layers.BatchNormalization: (lambda: keras.layers.BatchNormalization(name="src"), (4, 5, 5, 3)),
}

CLASSES = registry.CONDITIONAL_CLASSES
IDS = [cls.__name__ for cls in CLASSES]


def source_and_input(conditional_class, seed=0):
    """A built plain layer of `conditional_class.source_class` (non-trivial BN statistics) and an input."""
    make, shape = _SOURCES[conditional_class.source_class]
    layer = make()
    x = np.random.default_rng(seed).normal(size=shape).astype("float32")
    layer(x)
    if isinstance(layer, keras.layers.BatchNormalization):
        rng = np.random.default_rng(seed + 1)
        layer.set_weights([rng.normal(size=w.shape) if i != 3 else rng.uniform(0.5, 2, w.shape) for i, w in enumerate(layer.get_weights())])
    return layer, x
