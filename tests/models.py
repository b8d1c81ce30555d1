"""Tiny models of every graph shape, inputs for them, and a way to make both paths differ."""

import numpy as np

from keras_smart import _compat
from keras_smart import layers as cl

keras = _compat.keras

METHODS = ("smart", "float", "floats", "oat")
# Methods whose trade-off is continuous, so strip must match at intermediate lam too.
CONTINUOUS = {"float": {}, "floats": {}, "oat": {}, "smart": {"tradeoff_mode": "blend"}}


def conv_block_model(name="functional"):
    """A Functional model with every swappable layer, a branch and a merge."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.BatchNormalization(name="bn_dw")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.SeparableConv2D(6, 3, strides=2, name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((10, 10, 2)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Activation("relu", name="act"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, name="logits"),
        ],
        name="sequential",
    )


def nested_model():
    """A Functional model holding a nested Sequential and a shared nested Functional."""
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, name="inner_fc"), keras.layers.BatchNormalization(name="inner_bn")],
        name="inner_seq",
    )
    block_in = keras.Input((8,))
    block = keras.Model(block_in, keras.layers.Dense(8, activation="tanh", name="block_fc")(block_in), name="block")
    inputs = keras.Input((6,))
    x = inner(inputs)
    x = block(x)
    x = block(x)  # shared: called twice
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs, name="nested")


MODEL_BUILDERS = {"functional": conv_block_model, "sequential": sequential_model, "nested": nested_model}


def inputs_for(model, batch=3, seed=0):
    shape = (batch,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).random(shape).astype("float32")


def randomize_conditional_state(model, seed=0):
    """Gives every conditional weight a non-trivial value, so each path computes its own function."""
    rng = np.random.default_rng(seed)
    for layer in _compat.flatten_layers(model):
        if not isinstance(layer, cl.ConditionalLayer):
            continue
        for variable in layer.weights:
            name = _compat.weight_name(variable)
            shape = tuple(variable.shape)
            if name.endswith("_mask"):
                value = (rng.random(shape) < 0.6).astype("float32")
            elif name.startswith("adv_moving_variance"):
                value = rng.uniform(0.5, 2.0, shape)
            elif name.startswith("adv_") or name.startswith("film_kernel_2") or name.startswith("film_bias"):
                value = rng.normal(0.0, 0.3, shape)
            elif name.endswith("noise_scale"):
                value = np.full(shape, 0.3)
            else:
                continue
            variable.assign(np.asarray(value, dtype="float32"))


def max_abs_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))



def trained_digits_cnn(examples=1000, seed=0):
    """A small plain CNN trained for two epochs on the first `examples` embedded digits (None: all 4,000)."""
    import keras_smart  # pylint: disable=g-import-not-at-top

    keras.utils.set_random_seed(seed)
    x, y = keras_smart.data.digits("train")
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:examples], y[:examples], batch_size=64, epochs=2, verbose=0)
    return model
