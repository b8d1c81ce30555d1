"""Tiny models of every graph shape, inputs for them, and a way to make both paths differ."""

import numpy as np
import tensorflow as tf

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


# --- architectures beyond image CNNs: every layer family convert swaps ------------------------------


def convnext_block_model():
    """A ConvNeXt-style block: depthwise 7x7 as Conv2D(groups=C), LayerNorm, inverted MLP, residual;
    then a grouped 3x3 and a DepthwiseConv2D."""
    inputs = keras.Input((12, 12, 8))
    x = keras.layers.Conv2D(8, 7, padding="same", groups=8, name="dwconv")(inputs)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = keras.layers.Dense(32, activation="gelu", name="pwconv1")(x)
    x = keras.layers.Dense(8, name="pwconv2")(x)
    x = keras.layers.Add(name="residual")([inputs, x])
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", groups=4, name="grouped")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name="convnext_block")


def conv1d_model():
    """A small sequence classifier: causal and strided Conv1D, batch-norm."""
    inputs = keras.Input((32, 4))
    x = keras.layers.Conv1D(16, 5, padding="causal", dilation_rate=2, activation="relu", name="causal")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv1D(32, 3, strides=2, activation="relu", name="strided")(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inputs, keras.layers.Dense(6, name="logits")(x), name="conv1d")


def decoder_head_model():
    """A decoder head: Conv2DTranspose upsampling (same and valid padding, output_padding)."""
    inputs = keras.Input((6, 6, 8))
    x = keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", name="up1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", output_padding=1, name="up2")(x)
    x = keras.layers.Conv2DTranspose(3, 2, strides=1, padding="valid", name="up3")(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(x), name="decoder_head")


def conv3d_model():
    """A small volume classifier: Conv3D, grouped Conv3D."""
    inputs = keras.Input((6, 6, 6, 2))
    x = keras.layers.Conv3D(4, 3, activation="relu", name="conv3d")(inputs)
    x = keras.layers.Conv3D(4, 3, padding="same", groups=2, name="grouped3d")(x)
    x = keras.layers.GlobalAveragePooling3D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="conv3d")


def mobilenet_v3_small():
    return keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10)


def small_vit_model(name="small_vit"):
    """A one-block ViT: 4x4 patch embedding, pre-norm self-attention and MLP with residuals, a head.

    Its LayerNormalization layers get non-trivial scales and shifts.
    """
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 4, strides=4, name="patch_embed")(inputs)
    x = keras.layers.Reshape((16, 16), name="tokens")(x)
    y = keras.layers.LayerNormalization(epsilon=1e-6, name="norm1")(x)
    y = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(y, y)
    x = keras.layers.Add(name="residual1")([x, y])
    y = keras.layers.LayerNormalization(name="norm2")(x)
    y = keras.layers.Dense(32, activation="gelu", name="mlp1")(y)
    y = keras.layers.Dense(16, name="mlp2")(y)
    x = keras.layers.Add(name="residual2")([x, y])
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name=name)
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.set_weights([rng.normal(1.0, 0.3, w.shape) if i == 0 else rng.normal(0.0, 0.3, w.shape)
                               for i, w in enumerate(layer.get_weights())])
    return model


ARCHITECTURES = {
    "convnext_block": convnext_block_model,
    "conv1d": conv1d_model,
    "decoder_head": decoder_head_model,
    "conv3d": conv3d_model,
    "vit": small_vit_model,
}


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
            if name.endswith("_mask"):  # stored packed: assigned by the layer that owns it, at the kernel's shape
                if getattr(layer, name, None) is variable:
                    layer.assign_mask(name, (rng.random(layer.mask_shape(name)) < 0.6).astype("float32"))
                continue
            if name.startswith("adv_moving_variance"):
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


class Passes:
    """Counts, in the graph, the examples that go through a model forward and the gradients taken back through it.

    `count(x)` is the identity on x that counts; put it where the model reads its input.
    """

    def __init__(self):
        self.forward = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.gradient = tf.Variable(0, dtype=tf.int64, trainable=False)

    def count(self, x):
        @tf.custom_gradient
        def counted(x):
            self.forward.assign_add(tf.shape(x, out_type=tf.int64)[0])

            def gradient(upstream):
                self.gradient.assign_add(tf.shape(upstream, out_type=tf.int64)[0])
                return upstream

            return tf.identity(x), gradient

        return counted(x)

    def during(self, run):
        """(run()'s result, forward passes, gradient passes) counted while `run` runs."""
        self.forward.assign(0)
        self.gradient.assign(0)
        result = run()
        return result, int(self.forward.numpy()), int(self.gradient.numpy())
