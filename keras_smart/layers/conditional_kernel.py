"""Kernels that depend on the trade-off (binary masks, weight noise) and the layer math they feed.

A conditional conv/dense layer = `ConditionalKernel` (which kernel to use at lam)
+ one of the `*Math` mixins (what the Keras layer computes with that kernel)
+ the Keras layer class (configuration, weights, shapes). The math is written
with TensorFlow ops so it is the same in both Keras flavours.
"""

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart.layers import base
from keras_smart.layers import quantized

keras = _compat.keras

# A float32 weight that stays float32 under mixed precision.
_FLOAT32 = {"dtype": "float32", **_compat.NO_AUTOCAST}


class ConditionalKernel(base.ConditionalLayer):
    """Adds masks and/or lam-scaled noise to the kernels named in `kernel_names`.

    Subclasses set `mask_kind` ("dual": one mask per path; "single": one mask
    shared by both paths; None) and whether the kernels are `noisy`.

    Kernel at trade-off lam (a = path weight, see `path_weight`):
      quantized: W is first replaced by Binary-Relax's relaxed kernel
              (W + eta * Q(W)) / (1 + eta), Q over the union of the kernel's
              masks, eta = the "relax_eta" weight (see `layers.quantized`)
      noisy:  W + lam * |alpha| * std(W) * eta * [W != 0], eta ~ N(0, 1) per call
      dual:   (...) * ((1 - a) * M_clean + a * M_adv)
      single: (...) * M

    Args (besides the subclass's and the Keras layer's own):
      quantization: None, or {"bits": one of `quantized.BITS`, "per_channel":
        bool}: relax the kernels towards that level set (set by
        `keras_smart.quantization.binary_relax`).
    """

    mask_kind = None
    noisy = False
    RELAX_ETA = "relax_eta"
    _quantization = None

    def __init__(self, *args, quantization=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Set past Keras's attribute tracking, which would wrap the dict in both flavours.
        object.__setattr__(self, "_quantization", quantized.check_quantization(quantization))

    @property
    def quantization(self):
        """{"bits": one of `quantized.BITS`, "per_channel": bool}, or None: not relaxed."""
        return None if self._quantization is None else dict(self._quantization)

    def get_config(self):
        config = super().get_config()
        if self.quantization is not None:
            config["quantization"] = self.quantization
        return config

    def source_config(self):
        config = super().source_config()
        config.pop("quantization", None)
        return config

    # --- state ----------------------------------------------------------------------------------

    def mask_names(self, kernel_name):
        """Names of the mask weights of one kernel ("kernel_clean_mask", ...)."""
        if self.mask_kind == "dual":
            return (f"{kernel_name}_clean_mask", f"{kernel_name}_adv_mask")
        if self.mask_kind == "single":
            return (f"{kernel_name}_mask",)
        return ()

    def noise_scale_name(self, kernel_name):
        return f"{kernel_name}_noise_scale"

    def conditioning_weight_names(self):
        if self.noisy:
            return tuple(self.noise_scale_name(k) for k in self.kernel_names)
        return super().conditioning_weight_names()

    def conditional_weight_names(self):
        names = []
        for kernel_name in self.kernel_names:
            names.extend(self.mask_names(kernel_name))
            if self.noisy:
                names.append(self.noise_scale_name(kernel_name))
        if self.quantization is not None:
            names.append(self.RELAX_ETA)
        return tuple(names)

    def build(self, input_shape):
        super().build(input_shape)
        for kernel_name in self.kernel_names:
            shape = tuple(getattr(self, kernel_name).shape)
            for mask_name in self.mask_names(kernel_name):
                setattr(
                    self,
                    mask_name,
                    self.add_weight(name=mask_name, shape=shape, initializer="ones", trainable=False),
                )
            if self.noisy:
                name = self.noise_scale_name(kernel_name)
                setattr(
                    self,
                    name,
                    self.add_weight(
                        name=name,
                        shape=(),
                        initializer=keras.initializers.Constant(self.noise_init),
                        trainable=True,
                    ),
                )
        if self.quantization is not None:
            self.relax_eta = self.add_weight(
                name=self.RELAX_ETA, shape=(), initializer="ones", trainable=False, **_FLOAT32
            )

    # --- computation ----------------------------------------------------------------------------

    def path_weight(self, lam):
        """How far lam moves the dual masks from clean (0) to adversarial (1): a step at 0."""
        return tf.cast(lam > 0.0, lam.dtype)

    def conditional_kernel(self, kernel_name, lam):
        """The kernel this layer computes with at trade-off `lam` (a float32 scalar tensor)."""
        dtype = self.compute_dtype
        if self.quantization is not None:
            kernel = tf.cast(self._relaxed_kernel(kernel_name), dtype)
        else:
            kernel = tf.cast(getattr(self, kernel_name), dtype)
        if self.noisy and base.noise_enabled():
            scale = tf.abs(tf.cast(getattr(self, self.noise_scale_name(kernel_name)), dtype))
            spread = tf.stop_gradient(tf.math.reduce_std(kernel))
            eta = tf.random.normal(tf.shape(kernel), dtype=dtype, seed=self.seed)
            # No noise on exact zeros: a pruned weight stays zero on the noisy path too.
            present = tf.cast(tf.not_equal(kernel, 0.0), dtype)
            kernel = kernel + tf.cast(lam, dtype) * scale * spread * eta * present
        masks = [tf.cast(getattr(self, name), dtype) for name in self.mask_names(kernel_name)]
        if self.mask_kind == "dual":
            if base.shared_weights_held():
                shared = masks[0] * masks[1]
                kernel = tf.stop_gradient(kernel) * shared + kernel * (1.0 - shared)
            a = tf.cast(self.path_weight(lam), dtype)
            kernel = kernel * ((1.0 - a) * masks[0] + a * masks[1])
        elif self.mask_kind == "single":
            kernel = kernel * masks[0]
        return kernel

    # --- Binary-Relax quantization ---------------------------------------------------------------

    def quantization_support(self, kernel_name):
        """The weights of one kernel that some mask keeps (the union of its masks), as a NumPy
        0/1 array; None when the kernel has no mask (every weight is kept)."""
        masks = list(self.kernel_masks(kernel_name).values())
        if not masks:
            return None
        return np.maximum.reduce([np.asarray(m, "float32") for m in masks]) if len(masks) > 1 else masks[0]

    def _support_tensor(self, kernel_name):
        masks = [tf.cast(getattr(self, name), tf.float32) for name in self.mask_names(kernel_name)]
        if not masks:
            return None
        return masks[0] if len(masks) == 1 else tf.maximum(masks[0], masks[1])

    def _relaxed_kernel(self, kernel_name):
        """The relaxed float32 kernel (W + eta * Q(W)) / (1 + eta) at the layer's relax_eta."""
        return quantized.relaxed(
            tf.cast(getattr(self, kernel_name), tf.float32),
            self.quantization["bits"],
            tf.convert_to_tensor(self.relax_eta),
            axes=self.channel_axes(kernel_name) if self.quantization["per_channel"] else None,
            support=self._support_tensor(kernel_name),
        )

    def call(self, inputs):
        lam = self.current_tradeoff()
        if self.mask_kind == "dual" and base.paths_separated():
            return self._separated_call(inputs, lam)
        kernels = [self.conditional_kernel(name, lam) for name in self.kernel_names]
        return self._forward(inputs, *kernels)

    def _separated_call(self, inputs, lam):
        """The export form of `call` (see `base.separate_paths`): one constant kernel per path."""
        if self.noisy and base.noise_enabled():
            raise ValueError(
                f"Layer '{self.name}' draws weight noise; `separate_paths()` needs the noise at its "
                "expectation: wrap the call in keras_smart.layers.expected_noise() as well."
            )
        paths = [
            [self.conditional_kernel(name, tf.constant(p, tf.float32)) for name in self.kernel_names]
            for p in (0.0, 1.0)
        ]
        if self._paths_equal():
            return self._forward(inputs, *paths[0])
        a = tf.cast(self.path_weight(lam), self.compute_dtype)
        continuous = getattr(self, "tradeoff_mode", None) == "blend"
        if len(self.kernel_names) > 1 and continuous:  # not linear in one kernel: blend the kernels
            kernels = [(1.0 - a) * k0 + a * k1 for k0, k1 in zip(*paths)]
            return self._forward(inputs, *kernels)
        outputs = (1.0 - a) * self._linear(inputs, *paths[0]) + a * self._linear(inputs, *paths[1])
        return self._bias_and_activation(outputs)

    def _paths_equal(self):
        """Whether both paths use the same masks (read now, at trace time, from the variables)."""
        with tf.init_scope():
            return all(
                np.array_equal(*[np.asarray(m) for m in self.kernel_masks(name).values()])
                for name in self.kernel_names
            )

    def _forward(self, inputs, *kernels):
        return self._bias_and_activation(self._linear(inputs, *kernels))

    def folded_weights(self, tradeoff):
        values = base.weights_by_name(self)
        path = float(self.path_weight(tf.constant(tradeoff, tf.float32)))
        folded = {k: v for k, v in values.items() if k not in self.conditional_weight_names()}
        for kernel_name in self.kernel_names:
            if self.quantization is not None:
                values[kernel_name] = folded[kernel_name] = np.asarray(self._relaxed_kernel(kernel_name))
            masks = [values[name] for name in self.mask_names(kernel_name)]
            if self.mask_kind == "dual":
                folded[kernel_name] = values[kernel_name] * ((1.0 - path) * masks[0] + path * masks[1])
            elif self.mask_kind == "single":
                folded[kernel_name] = values[kernel_name] * masks[0]
        return folded

    def kernel_masks(self, kernel_name):
        """{mask name: NumPy array} of one kernel."""
        return {name: np.asarray(getattr(self, name).numpy()) for name in self.mask_names(kernel_name)}

    # --- saving: Keras 3's Conv/Dense store only kernel and bias; store every weight -------------

    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    # --- TF-MOT (tf_keras): the kernels are what magnitude pruning may zero -----------------------

    def get_prunable_weights(self):
        return [getattr(self, name) for name in self.kernel_names]


# --- what each Keras layer computes with its kernel(s) ----------------------------------------------


def _channels_first(layer):
    return layer.data_format == "channels_first"


def _tf_data_format(layer, rank=2):
    spatial = "DHW"[3 - rank:] if rank > 1 else "W"
    return f"NC{spatial}" if _channels_first(layer) else f"N{spatial}C"


def _add_bias_and_activate(layer, outputs, channels_first=False):
    if layer.use_bias:
        bias = tf.cast(layer.bias, outputs.dtype)
        if channels_first:  # bias_add knows NCHW only among the channels-first formats
            outputs = outputs + tf.reshape(bias, (1, -1) + (1,) * (outputs.shape.rank - 2))
        else:
            outputs = tf.nn.bias_add(outputs, bias)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def _four_d_strides(layer):
    strides = tuple(layer.strides)
    return (1, 1) + strides if _channels_first(layer) else (1,) + strides + (1,)


class ConvMath:
    """Conv1D / Conv2D / Conv3D with any `groups`, "causal" padding (Conv1D) and dilation."""

    kernel_names = ("kernel",)

    def channel_axes(self, kernel_name):
        """The kernel axes that index output channels: the last (filters)."""
        del kernel_name
        return (-1,)

    @classmethod
    def check_source(cls, layer):
        """Every Conv1D / Conv2D / Conv3D configuration is supported."""

    def _linear(self, inputs, kernel):
        padding = self.padding.upper()
        if padding == "CAUSAL":  # what Keras's Conv1D does: pad the past, then a valid convolution
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            time_axis = 2 if _channels_first(self) else 1
            paddings = [[0, 0], [0, 0], [0, 0]]
            paddings[time_axis] = [left, 0]
            inputs = tf.pad(inputs, paddings)
            padding = "VALID"
        rank = len(self.kernel_size)

        def convolve(x, k):
            return tf.nn.convolution(
                x, k, strides=self.strides, padding=padding, data_format=_tf_data_format(self, rank),
                dilations=self.dilation_rate,
            )

        if self.groups == 1 or rank < 3:  # TensorFlow's CPU kernels group 1-D and 2-D convolutions
            return convolve(inputs, kernel)
        # Grouped 3-D: one convolution per group (TensorFlow's CPU Conv3D has no groups).
        channel_axis = 1 if _channels_first(self) else -1
        parts = zip(tf.split(inputs, self.groups, axis=channel_axis), tf.split(kernel, self.groups, axis=-1))
        return tf.concat([convolve(x, k) for x, k in parts], axis=channel_axis)

    def _bias_and_activation(self, outputs):
        return _add_bias_and_activate(self, outputs, _channels_first(self))


def _transposed_length(length, kernel_size, stride, padding, output_padding, dilation):
    """Keras's output length of a transposed convolution along one axis."""
    kernel_size = (kernel_size - 1) * dilation + 1
    if padding == "valid":
        extra = max(kernel_size, stride) - kernel_size if output_padding is None else output_padding
        return (length - 1) * stride + kernel_size + extra
    if output_padding is None:
        return length * stride
    return (length - 1) * stride + kernel_size % 2 + output_padding


class ConvTransposeMath:
    """Conv2DTranspose: the gradient of a convolution, with Keras's output shape rule."""

    kernel_names = ("kernel",)

    def channel_axes(self, kernel_name):
        """The kernel axes that index output channels: the second last ([h, w, filters, in])."""
        del kernel_name
        return (-2,)

    @classmethod
    def check_source(cls, layer):
        """Every Conv2DTranspose configuration is supported."""

    def _linear(self, inputs, kernel):
        rank = len(self.kernel_size)
        spatial_axes = range(2, 2 + rank) if _channels_first(self) else range(1, 1 + rank)
        dynamic = tf.shape(inputs)
        output_padding = self.output_padding or (None,) * rank
        lengths = [
            _transposed_length(
                inputs.shape[axis] if inputs.shape[axis] is not None else dynamic[axis],
                self.kernel_size[i], self.strides[i], self.padding, output_padding[i], self.dilation_rate[i],
            )
            for i, axis in enumerate(spatial_axes)
        ]
        filters = kernel.shape[-2]
        shape = [dynamic[0], filters, *lengths] if _channels_first(self) else [dynamic[0], *lengths, filters]
        return tf.nn.conv_transpose(
            inputs, kernel, tf.stack(shape), strides=self.strides, padding=self.padding.upper(),
            data_format=_tf_data_format(self, rank), dilations=self.dilation_rate,
        )

    def _bias_and_activation(self, outputs):
        return _add_bias_and_activate(self, outputs, _channels_first(self))


class DepthwiseConv2DMath:
    kernel_names = (_compat.DEPTHWISE_KERNEL,)

    def channel_axes(self, kernel_name):
        """The kernel axes that index output channels: input channel and multiplier (the last two)."""
        del kernel_name
        return (-2, -1)

    @classmethod
    def check_source(cls, layer):
        """Every DepthwiseConv2D / SeparableConv2D configuration is supported."""

    def _linear(self, inputs, depthwise_kernel):
        return tf.nn.depthwise_conv2d(
            inputs,
            depthwise_kernel,
            strides=_four_d_strides(self),
            padding=self.padding.upper(),
            data_format=_tf_data_format(self),
            dilations=self.dilation_rate,
        )

    def _bias_and_activation(self, outputs):
        return _add_bias_and_activate(self, outputs, _channels_first(self))


class SeparableConv2DMath:
    kernel_names = ("depthwise_kernel", "pointwise_kernel")

    def channel_axes(self, kernel_name):
        """The kernel axes that index output channels: depthwise (-2, -1), pointwise (-1,)."""
        return (-2, -1) if kernel_name == "depthwise_kernel" else (-1,)

    @classmethod
    def check_source(cls, layer):
        """Every DepthwiseConv2D / SeparableConv2D configuration is supported."""

    def _linear(self, inputs, depthwise_kernel, pointwise_kernel):
        return tf.nn.separable_conv2d(
            inputs,
            depthwise_kernel,
            pointwise_kernel,
            strides=_four_d_strides(self),
            padding=self.padding.upper(),
            data_format=_tf_data_format(self),
            dilations=self.dilation_rate,
        )

    def _bias_and_activation(self, outputs):
        return _add_bias_and_activate(self, outputs, _channels_first(self))


class DenseMath:
    kernel_names = ("kernel",)

    def channel_axes(self, kernel_name):
        """The kernel axes that index output channels: the last (units)."""
        del kernel_name
        return (-1,)

    @classmethod
    def check_source(cls, layer):
        """Raises if the plain `layer` has a configuration this class cannot reproduce."""
        if getattr(layer, "lora_rank", None):
            raise ValueError(
                f"Dense layer '{layer.name}' has LoRA enabled (lora_rank={layer.lora_rank}); "
                "conditional kernels need a plain kernel. Ways forward: merge or disable LoRA before "
                f"convert, {base.keep_plain_hint(layer)}."
            )

    def _linear(self, inputs, kernel):
        if inputs.shape.rank == 2:
            return tf.matmul(inputs, kernel)
        return tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])

    def _bias_and_activation(self, outputs):
        return _add_bias_and_activate(self, outputs)


def _quantization_mode(layer):
    """Keras 3's quantization mode of a layer ("int8", "float8", ...), None when not quantized."""
    mode = getattr(layer, "quantization_mode", None)
    policy = getattr(layer, "dtype_policy", None)
    return mode or getattr(policy, "quantization_mode", None)


class EinsumDenseMath:
    """EinsumDense: `einsum(equation, inputs, kernel)`, then the bias broadcast over the output."""

    kernel_names = ("kernel",)

    def channel_axes(self, kernel_name):
        """The kernel axes that index output channels: the last."""
        del kernel_name
        return (-1,)

    @classmethod
    def check_source(cls, layer):
        """Raises for a LoRA-enabled or quantized EinsumDense (conditional kernels need a plain kernel)."""
        problem = cls.unsupported(layer)
        if problem:
            raise ValueError(
                f"EinsumDense layer '{layer.name}' {problem}; conditional kernels need a plain float "
                "kernel. Ways forward: merge or disable LoRA, convert the float model before "
                f"quantizing it, {base.keep_plain_hint(layer)}."
            )

    @staticmethod
    def unsupported(layer):
        """What in the plain EinsumDense `layer` a conditional kernel cannot reproduce, or None."""
        if getattr(layer, "lora_rank", None) or getattr(layer, "lora_enabled", False):
            return f"has LoRA enabled (lora_rank={getattr(layer, 'lora_rank', None)})"
        if _quantization_mode(layer) is not None:
            return f"is quantized (quantization_mode={_quantization_mode(layer)!r})"
        return None

    def _linear(self, inputs, kernel):
        return tf.einsum(self.equation, inputs, kernel)

    def _bias_and_activation(self, outputs):
        if self.bias is not None:  # shaped by Keras to broadcast against the output's trailing axes
            outputs = outputs + tf.cast(self.bias, outputs.dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
