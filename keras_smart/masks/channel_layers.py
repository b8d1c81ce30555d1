"""Which Keras layers carry a tensor's channels through one by one: where a whole output channel can flow.

A channel-structured mask drops whole output channels of a kernel layer. What
happens to such a channel downstream depends on the layers it flows through:
- `per_channel` layers (batch-norm, activations, dropout, padding, pooling,
  noise injection) compute output channel i from input channel i alone, so a
  dropped channel stays one channel, constant over the image (zero padding
  aside);
- `pools_space` layers (global pooling) keep the channels and drop space;
- anything else (additions, concatenations, multiplications, reshapes,
  attention, unknown layers) mixes or re-indexes channels: a channel that
  reaches one cannot be dropped.
"""

from keras_smart import _compat
from keras_smart.layers import noise_injection

keras = _compat.keras

_PER_CHANNEL = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    noise_injection.NoiseInjection,
)
_POOLS_SPACE = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)
_PADDING = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in ("channels_last", None)


def per_channel(layer):
    """Whether output channel i of `layer` depends on input channel i alone (channels last).

    Batch-norm counts only on the last axis; `keras_smart`'s dual batch-norm and
    FiLM layers subclass BatchNormalization.
    """
    if isinstance(layer, keras.layers.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else (list(layer.axis) or [None])[0]
        return axis == -1 or axis == len(layer.input.shape) - 1
    return isinstance(layer, _PER_CHANNEL) and _channels_last(layer)


def pools_space(layer):
    """Whether `layer` keeps the channels and reduces the spatial axes (global pooling, channels last)."""
    return isinstance(layer, _POOLS_SPACE) and _channels_last(layer) and not getattr(layer, "keepdims", False)


def pads_with_zeros(layer):
    """Whether `layer` surrounds the image with zeros (a constant channel is then no longer constant)."""
    return isinstance(layer, _PADDING)
