"""Backbones for the examples, the CLI and the benchmarks: plain Keras models that `convert` accepts.

Each builder returns an uncompiled Functional `keras.Model` that outputs logits
(the attacks and the default losses expect logits). Batch-norm momentum is 0.9
rather than Keras' 0.99: short runs otherwise end with moving statistics far
from the data's, and adversarial training evaluates in inference mode.
"""

from keras_smart import _compat

keras = _compat.keras


def digits_cnn(input_shape=(28, 28, 1), classes=10, width=32, name="digits_cnn"):
    """A small CNN for 28x28 digits: two conv-BN-ReLU-pool blocks and a two-layer head.

    Args:
      input_shape: (height, width, channels).
      classes: number of output logits.
      width: filters of the first conv (the second has twice as many, the
        hidden dense layer four times as many).
      name: the model's name.

    Returns:
      A Functional `keras.Model` mapping images in [0, 1] to logits.

    Example:
      >>> model = keras_smart.backbones.digits_cnn()
      >>> smart = keras_smart.convert(model, method="smart")
    """
    inputs = keras.Input(input_shape, name="image")
    h = inputs
    for block, filters in enumerate((width, 2 * width), start=1):
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(h)
        h = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(h)
        h = keras.layers.ReLU(name=f"relu{block}")(h)
        h = keras.layers.MaxPooling2D(name=f"pool{block}")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(4 * width, activation="relu", name="fc")(h)
    outputs = keras.layers.Dense(classes, name="logits")(h)
    return keras.Model(inputs, outputs, name=name)
