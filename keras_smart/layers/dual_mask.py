"""SMART layers: one shared kernel, a clean and an adversarial binary mask over it."""

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart import validation
from keras_smart.layers import conditional_kernel as ck
from keras_smart.layers import kernel_math

keras = _compat.keras


def check_noise_options(noise_init, seed):
    validation.check_real(noise_init, "noise_init", low=0.0)
    validation.check_seed(seed, allow_none=True)


class DualMask(ck.ConditionalKernel):
    """Mixin: kernel W with masks M_clean (lam = 0) and M_adv (lam > 0), per `tradeoff_mode`.

    Args (besides the Keras layer's own):
      tradeoff_mode: "switch" (default), "blend" or "noise"; see `config.TradeoffMode`.
      noise_init: initial noise scale for `tradeoff_mode="noise"`.
      seed: seed of the noise for `tradeoff_mode="noise"`.
    """

    mask_kind = "dual"
    conditional_config_keys = ("tradeoff_mode", "noise_init", "seed", "quantization")

    def __init__(self, *args, tradeoff_mode="switch", noise_init=0.25, seed=None, **kwargs):
        super().__init__(*args, **kwargs)
        options = self.check_options(tradeoff_mode=tradeoff_mode, noise_init=noise_init, seed=seed)
        self.tradeoff_mode = options["tradeoff_mode"]
        self.noisy = self.tradeoff_mode == config_lib.TradeoffMode.NOISE.value
        self.noise_init = options["noise_init"]
        self.seed = seed
        self.check_source(self)

    @classmethod
    def check_options(cls, tradeoff_mode="switch", noise_init=0.25, seed=None):
        """Validates this class's own arguments; returns them normalised."""
        check_noise_options(noise_init, seed)
        mode = config_lib.coerce_enum(config_lib.TradeoffMode, tradeoff_mode, "tradeoff_mode")
        return {"tradeoff_mode": mode.value, "noise_init": float(noise_init), "seed": seed}

    def path_weight(self, lam):
        if self.tradeoff_mode == config_lib.TradeoffMode.BLEND.value:
            return lam
        return super().path_weight(lam)

    def get_config(self):
        return {
            **super().get_config(),
            "tradeoff_mode": self.tradeoff_mode,
            "noise_init": self.noise_init,
            "seed": self.seed,
        }


@_compat.register_serializable
class DualMaskConv2D(DualMask, kernel_math.ConvMath, keras.layers.Conv2D):
    """A `keras.layers.Conv2D` with a clean and an adversarial mask over its kernel.

    Example:
      >>> layer = DualMaskConv2D(8, 3, padding="same")
      >>> y = layer(tf.zeros((1, 16, 16, 3)))
      >>> [w.name.split("/")[-1].split(":")[0] for w in layer.non_trainable_weights]
      ['kernel_clean_mask', 'kernel_adv_mask']
    """

    source_class = keras.layers.Conv2D


@_compat.register_serializable
class DualMaskDepthwiseConv2D(DualMask, kernel_math.DepthwiseConv2DMath, keras.layers.DepthwiseConv2D):
    """A `keras.layers.DepthwiseConv2D` with a clean and an adversarial mask over its kernel.

    Example:
      >>> y = DualMaskDepthwiseConv2D(3, padding="same")(tf.zeros((1, 8, 8, 4)))
    """

    source_class = keras.layers.DepthwiseConv2D


@_compat.register_serializable
class DualMaskSeparableConv2D(DualMask, kernel_math.SeparableConv2DMath, keras.layers.SeparableConv2D):
    """A `keras.layers.SeparableConv2D` with clean and adversarial masks over both its kernels.

    Example:
      >>> y = DualMaskSeparableConv2D(8, 3, padding="same")(tf.zeros((1, 8, 8, 4)))
    """

    source_class = keras.layers.SeparableConv2D


@_compat.register_serializable
class DualMaskDense(DualMask, kernel_math.DenseMath, keras.layers.Dense):
    """A `keras.layers.Dense` with a clean and an adversarial mask over its kernel.

    Example:
      >>> y = DualMaskDense(10)(tf.zeros((2, 32)))
    """

    source_class = keras.layers.Dense


@_compat.register_serializable
class DualMaskConv1D(DualMask, kernel_math.ConvMath, keras.layers.Conv1D):
    """A `keras.layers.Conv1D` with a clean and an adversarial mask over its kernel.

    Example:
      >>> y = DualMaskConv1D(8, 3, padding="causal")(tf.zeros((1, 16, 3)))
    """

    source_class = keras.layers.Conv1D


@_compat.register_serializable
class DualMaskConv3D(DualMask, kernel_math.ConvMath, keras.layers.Conv3D):
    """A `keras.layers.Conv3D` with a clean and an adversarial mask over its kernel.

    Example:
      >>> y = DualMaskConv3D(4, 3, groups=2)(tf.zeros((1, 6, 6, 6, 4)))
    """

    source_class = keras.layers.Conv3D


@_compat.register_serializable
class DualMaskConv2DTranspose(DualMask, kernel_math.ConvTransposeMath, keras.layers.Conv2DTranspose):
    """A `keras.layers.Conv2DTranspose` with a clean and an adversarial mask over its kernel.

    Example:
      >>> y = DualMaskConv2DTranspose(4, 3, strides=2, padding="same")(tf.zeros((1, 8, 8, 3)))
    """

    source_class = keras.layers.Conv2DTranspose


@_compat.register_serializable
class DualMaskEinsumDense(DualMask, kernel_math.EinsumDenseMath, keras.layers.EinsumDense):
    """A `keras.layers.EinsumDense` with a clean and an adversarial mask over its kernel.

    Example:
      >>> layer = DualMaskEinsumDense("abc,cd->abd", output_shape=(None, 8), bias_axes="d")
      >>> y = layer(tf.zeros((2, 4, 5)))
    """

    source_class = keras.layers.EinsumDense
