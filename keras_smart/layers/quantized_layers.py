"""Plain quantized layers: a Keras conv/dense layer whose kernel is relaxed towards a low-bit level set.

No masks, no noise: the same computation on every path. They are conditional
layers so that `strip` folds them (the relaxed kernel at the layer's current
relax_eta) and `binary_relax` / `finalize` treat them like the relaxed SMART
and FLOAT kernels. `keras_smart.quantization.binary_relax` puts them into a
plain model.
"""

from keras_smart import _compat
from keras_smart.layers import conditional_kernel as ck
from keras_smart.layers import kernel_math

keras = _compat.keras


class Quantized(ck.ConditionalKernel):
    """Mixin: a plain kernel, relaxed towards `quantization`'s level set (see `ConditionalKernel`).

    Args (besides the Keras layer's own):
      quantization: {"bits": one of `keras_smart.layers.quantized.BITS`,
        "per_channel": bool}, or None (the plain layer's computation, until
        `binary_relax` sets it).
    """

    conditional_config_keys = ("quantization",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_source(self)

    @classmethod
    def check_options(cls, quantization=None):
        """Validates this class's own argument."""
        ck.quantized.check_quantization(quantization)


@_compat.register_serializable
class QuantizedConv1D(Quantized, kernel_math.ConvMath, keras.layers.Conv1D):
    """A `keras.layers.Conv1D` whose kernel is relaxed towards a low-bit level set.

    Example:
      >>> y = QuantizedConv1D(4, 3, quantization={"bits": "int4"})(tf.zeros((1, 8, 2)))
    """

    source_class = keras.layers.Conv1D


@_compat.register_serializable
class QuantizedConv2D(Quantized, kernel_math.ConvMath, keras.layers.Conv2D):
    """A `keras.layers.Conv2D` whose kernel is relaxed towards a low-bit level set.

    Example:
      >>> layer = QuantizedConv2D(4, 3, quantization={"bits": "ternary", "per_channel": True})
      >>> y = layer(tf.zeros((1, 8, 8, 2)))
      >>> float(layer.relax_eta.numpy())
      1.0
    """

    source_class = keras.layers.Conv2D


@_compat.register_serializable
class QuantizedConv3D(Quantized, kernel_math.ConvMath, keras.layers.Conv3D):
    """A `keras.layers.Conv3D` whose kernel is relaxed towards a low-bit level set.

    Example:
      >>> y = QuantizedConv3D(2, 3, quantization={"bits": "binary"})(tf.zeros((1, 5, 5, 5, 2)))
    """

    source_class = keras.layers.Conv3D


@_compat.register_serializable
class QuantizedConv2DTranspose(Quantized, kernel_math.ConvTransposeMath, keras.layers.Conv2DTranspose):
    """A `keras.layers.Conv2DTranspose` whose kernel is relaxed towards a low-bit level set.

    Example:
      >>> y = QuantizedConv2DTranspose(2, 3, strides=2, quantization={"bits": "int4"})(tf.zeros((1, 4, 4, 3)))
    """

    source_class = keras.layers.Conv2DTranspose


@_compat.register_serializable
class QuantizedDepthwiseConv2D(Quantized, kernel_math.DepthwiseConv2DMath, keras.layers.DepthwiseConv2D):
    """A `keras.layers.DepthwiseConv2D` whose kernel is relaxed towards a low-bit level set.

    Example:
      >>> y = QuantizedDepthwiseConv2D(3, quantization={"bits": "ternary"})(tf.zeros((1, 6, 6, 2)))
    """

    source_class = keras.layers.DepthwiseConv2D


@_compat.register_serializable
class QuantizedSeparableConv2D(Quantized, kernel_math.SeparableConv2DMath, keras.layers.SeparableConv2D):
    """A `keras.layers.SeparableConv2D` whose kernels are relaxed towards a low-bit level set.

    Example:
      >>> y = QuantizedSeparableConv2D(4, 3, quantization={"bits": "ternary"})(tf.zeros((1, 6, 6, 2)))
    """

    source_class = keras.layers.SeparableConv2D


@_compat.register_serializable
class QuantizedDense(Quantized, kernel_math.DenseMath, keras.layers.Dense):
    """A `keras.layers.Dense` whose kernel is relaxed towards a low-bit level set.

    Example:
      >>> layer = QuantizedDense(3, quantization={"bits": "binary"})
      >>> y = layer(tf.ones((1, 4)))
      >>> layer.quantization
      {'bits': 'binary', 'per_channel': False}
    """

    source_class = keras.layers.Dense


@_compat.register_serializable
class QuantizedEinsumDense(Quantized, kernel_math.EinsumDenseMath, keras.layers.EinsumDense):
    """A `keras.layers.EinsumDense` whose kernel is relaxed towards a low-bit level set.

    Example:
      >>> layer = QuantizedEinsumDense("abc,cd->abd", output_shape=(None, 4), quantization={"bits": "int4"})
      >>> y = layer(tf.zeros((2, 3, 5)))
    """

    source_class = keras.layers.EinsumDense
