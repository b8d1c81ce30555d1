"""Backbones for the examples, the CLI and the benchmarks: plain Keras models that `convert` accepts.

Each builder returns an uncompiled Functional `keras.Model` that outputs logits
(the attacks and the default losses expect logits). Batch-norm layers keep
Keras's defaults (momentum 0.99), as a user's model would; short runs leave
such statistics behind the weights, which `keras_smart.recalibrate_batchnorm`
(run at the end of every adversarial `fit` by default) puts right.
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
      >>> tuple(model(x[:2]).shape)
      (2, 10)
    """
    inputs = keras.Input(input_shape, name="image")
    h = inputs
    for block, filters in enumerate((width, 2 * width), start=1):
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{block}")(h)
        h = keras.layers.ReLU(name=f"relu{block}")(h)
        h = keras.layers.MaxPooling2D(name=f"pool{block}")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(4 * width, activation="relu", name="fc")(h)
    outputs = keras.layers.Dense(classes, name="logits")(h)
    return keras.Model(inputs, outputs, name=name)


def _conv_bn(h, filters, strides, name, kernel_size=3, relu=True):
    h = keras.layers.Conv2D(filters, kernel_size, strides, padding="same", use_bias=False, name=f"{name}_conv")(h)
    h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
    return keras.layers.ReLU(name=f"{name}_relu")(h) if relu else h


def resnet(depth=20, input_shape=(32, 32, 3), classes=10, width=16, name=None):
    """He et al.'s CIFAR ResNet (6n + 2 layers: 20, 32, 44, 56, 110) with projection shortcuts.

    Three stages of n basic blocks at width, 2*width and 4*width filters; a
    1x1 conv + batch-norm shortcut where the shape changes.

    Args:
      depth: 6n + 2.
      input_shape, classes: the data's.
      width: filters of the first stage.
      name: default "resnet<depth>".

    Raises:
      ValueError: a depth that is not 6n + 2.

    Example:
      >>> model = keras_smart.backbones.resnet(20)
      >>> model.output_shape
      (None, 10)
    """
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"`depth` must be 6n + 2 (20, 32, 44, 56, 110). Received: depth={depth!r}")
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="image")
    h = _conv_bn(inputs, width, 1, "stem")
    for stage, filters in enumerate((width, 2 * width, 4 * width), start=1):
        for block in range(blocks):
            strides = 2 if stage > 1 and block == 0 else 1
            prefix = f"stage{stage}_block{block}"
            shortcut = h
            if strides != 1 or h.shape[-1] != filters:
                shortcut = _conv_bn(h, filters, strides, f"{prefix}_shortcut", kernel_size=1, relu=False)
            out = _conv_bn(h, filters, strides, f"{prefix}_a")
            out = _conv_bn(out, filters, 1, f"{prefix}_b", relu=False)
            h = keras.layers.ReLU(name=f"{prefix}_out")(keras.layers.Add(name=f"{prefix}_add")([shortcut, out]))
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(classes, name="logits")(h)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


def wide_resnet(depth=16, widen=4, input_shape=(32, 32, 3), classes=10, name=None):
    """Zagoruyko & Komodakis' WRN-depth-widen (pre-activation blocks), as in adversarial training papers.

    Args:
      depth: 6n + 4 (16, 22, 28, 34).
      widen: the width multiplier k (stages of 16k, 32k, 64k filters).
      input_shape, classes: the data's.
      name: default "wrn<depth>_<widen>".

    Raises:
      ValueError: a depth that is not 6n + 4, or widen < 1.

    Example:
      >>> model = keras_smart.backbones.wide_resnet(16, 1)
      >>> model.output_shape
      (None, 10)
    """
    if (depth - 4) % 6 or depth < 10:
        raise ValueError(f"`depth` must be 6n + 4 (16, 22, 28, 34). Received: depth={depth!r}")
    if isinstance(widen, bool) or not isinstance(widen, int) or widen < 1:
        raise ValueError(f"`widen` must be an int >= 1. Received: widen={widen!r}")
    blocks = (depth - 4) // 6
    inputs = keras.Input(input_shape, name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    for stage, filters in enumerate((16 * widen, 32 * widen, 64 * widen), start=1):
        for block in range(blocks):
            strides = 2 if stage > 1 and block == 0 else 1
            prefix = f"stage{stage}_block{block}"
            pre = keras.layers.BatchNormalization(name=f"{prefix}_bn_a")(h)
            pre = keras.layers.ReLU(name=f"{prefix}_relu_a")(pre)
            shortcut = h
            if strides != 1 or h.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(
                    filters, 1, strides, use_bias=False, name=f"{prefix}_shortcut_conv"
                )(pre)
            out = keras.layers.Conv2D(filters, 3, strides, padding="same", use_bias=False, name=f"{prefix}_conv_a")(pre)
            out = keras.layers.BatchNormalization(name=f"{prefix}_bn_b")(out)
            out = keras.layers.ReLU(name=f"{prefix}_relu_b")(out)
            out = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{prefix}_conv_b")(out)
            h = keras.layers.Add(name=f"{prefix}_add")([shortcut, out])
    h = keras.layers.BatchNormalization(name="final_bn")(h)
    h = keras.layers.ReLU(name="final_relu")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(classes, name="logits")(h)
    return keras.Model(inputs, outputs, name=name or f"wrn{depth}_{widen}")


def mobilenet_v2(input_shape=(32, 32, 3), classes=10, alpha=1.0, name="mobilenetv2"):
    """keras.applications' MobileNetV2 (untrained) with a logits head: the phone-sized backbone.

    Args:
      input_shape: at least 32x32 (keras.applications' minimum).
      classes: number of output logits.
      alpha: the width multiplier.
      name: the model's name (Keras 3; tf_keras' MobileNetV2 takes no name).

    Example:
      >>> model = keras_smart.backbones.mobilenet_v2((32, 32, 3), classes=10)
      >>> model.output_shape
      (None, 10)
    """
    return keras.applications.MobileNetV2(
        input_shape=input_shape,
        alpha=alpha,
        weights=None,
        classes=classes,
        classifier_activation=None,
        **({} if _compat.IS_LEGACY else {"name": name}),
    )


BACKBONES = {"digits_cnn": digits_cnn, "resnet20": resnet, "wrn16_4": wide_resnet, "mobilenet_v2": mobilenet_v2}


def build(name, input_shape, classes):
    """The backbone called `name` (a key of `BACKBONES`) for images of `input_shape` and `classes` labels."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}. Choose from {sorted(BACKBONES)}.")
    return BACKBONES[name](input_shape=tuple(input_shape), classes=classes)
