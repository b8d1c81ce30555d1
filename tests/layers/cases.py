"""For each conditional class: a plain source layer and an input to call both on."""

import numpy as np

from keras_smart import registry
from tests.models import keras

_SOURCES = {
    keras.layers.Conv2D: (lambda: keras.layers.Conv2D(4, 3, strides=2, padding="same", groups=2, activation="relu", name="src"), (2, 7, 7, 6)),
    keras.layers.Conv1D: (lambda: keras.layers.Conv1D(4, 3, dilation_rate=2, padding="causal", name="src"), (2, 9, 3)),
    keras.layers.Conv3D: (lambda: keras.layers.Conv3D(4, 3, padding="same", groups=2, name="src"), (2, 5, 5, 5, 4)),
    keras.layers.Conv2DTranspose: (lambda: keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", output_padding=1, name="src"), (2, 5, 5, 3)),
    keras.layers.DepthwiseConv2D: (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="src"), (2, 7, 7, 3)),
    keras.layers.SeparableConv2D: (lambda: keras.layers.SeparableConv2D(5, 3, padding="same", name="src"), (2, 6, 6, 3)),
    keras.layers.Dense: (lambda: keras.layers.Dense(5, activation="tanh", name="src"), (2, 4, 6)),
    keras.layers.BatchNormalization: (lambda: keras.layers.BatchNormalization(name="src"), (4, 5, 5, 3)),
    keras.layers.EinsumDense: (lambda: keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 6), bias_axes="d", activation="relu", name="src"), (2, 4, 5)),
    keras.layers.MultiHeadAttention: (lambda: keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=4, name="src"), (2, 5, 6)),
    keras.layers.LayerNormalization: (lambda: keras.layers.LayerNormalization(epsilon=1e-4, name="src"), (2, 4, 5)),
}
# Sources whose every weight gets a random value (non-zero biases, non-trivial affine parameters).
_RANDOM_WEIGHTS = (keras.layers.EinsumDense, keras.layers.MultiHeadAttention, keras.layers.LayerNormalization)

CLASSES = registry.CONDITIONAL_CLASSES
IDS = [cls.__name__ for cls in CLASSES]


def source_and_input(conditional_class, seed=0):
    """A built plain layer of `conditional_class.source_class` (non-trivial BN statistics) and an input."""
    make, shape = _SOURCES[conditional_class.source_class]
    layer = make()
    x = np.random.default_rng(seed).normal(size=shape).astype("float32")
    call(layer, x)
    if isinstance(layer, keras.layers.BatchNormalization):
        rng = np.random.default_rng(seed + 1)
        layer.set_weights([rng.normal(size=w.shape) if i != 3 else rng.uniform(0.5, 2, w.shape) for i, w in enumerate(layer.get_weights())])
    if isinstance(layer, _RANDOM_WEIGHTS):
        rng = np.random.default_rng(seed + 1)
        layer.set_weights([rng.normal(0.0, 0.5, w.shape) for w in layer.get_weights()])
    return layer, x


def call(layer, x, **kwargs):
    """Calls `layer` on `x` the way its case is meant: attention layers attend over `x` itself."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return layer(x, x, **kwargs)
    return layer(x, **kwargs)
