"""FLOAT / FLOATS layers: a kernel with lam-scaled learnable noise, optionally one fixed mask."""

from keras_smart import _compat
from keras_smart.layers import conditional_kernel as ck
from keras_smart.layers import kernel_math
from keras_smart.layers import dual_mask

keras = _compat.keras


class Noisy(ck.ConditionalKernel):
    """Mixin: kernel W + lam * |alpha| * std(W) * eta, eta ~ N(0, 1) drawn on every call.

    lam = 0 is exactly the noise-free kernel. `alpha` ("<kernel>_noise_scale")
    is trainable, one scalar per kernel. Weights that are exactly zero (pruned)
    get no noise, so they stay zero on the noisy path too.

    Args (besides the Keras layer's own):
      noise_init: initial alpha (default 0.25).
      seed: seed of the noise (None: TensorFlow's global seed rules).
      masked: add one binary mask ("<kernel>_mask") shared by both paths (FLOATS).
    """

    noisy = True
    conditional_config_keys = ("noise_init", "seed", "masked", "quantization")

    def __init__(self, *args, noise_init=0.25, seed=None, masked=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_options(noise_init=noise_init, seed=seed)
        self.noise_init = float(noise_init)
        self.seed = seed
        self.masked = bool(masked)
        self.mask_kind = "single" if self.masked else None
        self.check_source(self)

    @classmethod
    def check_options(cls, noise_init=0.25, seed=None, masked=False):
        """Validates this class's own arguments."""
        del masked  # any truth value
        dual_mask.check_noise_options(noise_init, seed)

    def get_config(self):
        return {
            **super().get_config(),
            "noise_init": self.noise_init,
            "seed": self.seed,
            "masked": self.masked,
        }


@_compat.register_serializable
class NoisyConv2D(Noisy, kernel_math.ConvMath, keras.layers.Conv2D):
    """A `keras.layers.Conv2D` whose kernel carries lam-scaled learnable noise.

    Example:
      >>> y = NoisyConv2D(8, 3, seed=0)(tf.zeros((1, 16, 16, 3)))
    """

    source_class = keras.layers.Conv2D


@_compat.register_serializable
class NoisyDepthwiseConv2D(Noisy, kernel_math.DepthwiseConv2DMath, keras.layers.DepthwiseConv2D):
    """A `keras.layers.DepthwiseConv2D` whose kernel carries lam-scaled learnable noise.

    Example:
      >>> y = NoisyDepthwiseConv2D(3, padding="same")(tf.zeros((1, 8, 8, 4)))
    """

    source_class = keras.layers.DepthwiseConv2D


@_compat.register_serializable
class NoisySeparableConv2D(Noisy, kernel_math.SeparableConv2DMath, keras.layers.SeparableConv2D):
    """A `keras.layers.SeparableConv2D` whose kernels carry lam-scaled learnable noise.

    Example:
      >>> y = NoisySeparableConv2D(8, 3, padding="same")(tf.zeros((1, 8, 8, 4)))
    """

    source_class = keras.layers.SeparableConv2D


@_compat.register_serializable
class NoisyDense(Noisy, kernel_math.DenseMath, keras.layers.Dense):
    """A `keras.layers.Dense` whose kernel carries lam-scaled learnable noise.

    Example:
      >>> y = NoisyDense(10, masked=True)(tf.zeros((2, 32)))
    """

    source_class = keras.layers.Dense


@_compat.register_serializable
class NoisyConv1D(Noisy, kernel_math.ConvMath, keras.layers.Conv1D):
    """A `keras.layers.Conv1D` whose kernel carries lam-scaled learnable noise.

    Example:
      >>> y = NoisyConv1D(8, 3, seed=0)(tf.zeros((1, 16, 3)))
    """

    source_class = keras.layers.Conv1D


@_compat.register_serializable
class NoisyConv3D(Noisy, kernel_math.ConvMath, keras.layers.Conv3D):
    """A `keras.layers.Conv3D` whose kernel carries lam-scaled learnable noise.

    Example:
      >>> y = NoisyConv3D(4, 3)(tf.zeros((1, 6, 6, 6, 2)))
    """

    source_class = keras.layers.Conv3D


@_compat.register_serializable
class NoisyConv2DTranspose(Noisy, kernel_math.ConvTransposeMath, keras.layers.Conv2DTranspose):
    """A `keras.layers.Conv2DTranspose` whose kernel carries lam-scaled learnable noise.

    Example:
      >>> y = NoisyConv2DTranspose(4, 3, strides=2)(tf.zeros((1, 8, 8, 3)))
    """

    source_class = keras.layers.Conv2DTranspose


@_compat.register_serializable
class NoisyEinsumDense(Noisy, kernel_math.EinsumDenseMath, keras.layers.EinsumDense):
    """A `keras.layers.EinsumDense` whose kernel carries lam-scaled learnable noise.

    Example:
      >>> y = NoisyEinsumDense("abc,cd->abd", output_shape=(None, 8), seed=0)(tf.zeros((2, 4, 5)))
    """

    source_class = keras.layers.EinsumDense
