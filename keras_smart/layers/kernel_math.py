"""What each Keras conv/dense layer computes with its kernel(s): the `*Math` mixins of conditional kernels.

A conditional conv/dense layer = `conditional_kernel.ConditionalKernel` (which
kernel to use at lam) + one of these mixins (what the Keras layer computes with
that kernel) + the Keras layer class (configuration, weights, shapes). The math
is written with TensorFlow ops so it is the same in both Keras flavours.
"""

import tensorflow as tf

from keras_smart import _compat
from keras_smart.layers import base


def plus_per_row(outputs, coefficient, delta):
    """outputs + c_i * delta, example i of the batch (the first axis) scaled by c_i."""
    shape = tf.concat([tf.shape(coefficient), tf.ones([delta.shape.rank - 1], tf.int32)], 0)
    return outputs + tf.reshape(coefficient, shape) * delta


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

    def _staged_per_example_linear(self, inputs, bases, deltas, coefficient):
        """Per-example kernels B + c_i * D for both kernels, stage by stage: the depthwise output
        d_i = dw(x_i; B_dw) + c_i dw(x_i; D_dw), then pw(d_i; B_pw) + c_i pw(d_i; D_pw)."""
        options = dict(padding=self.padding.upper(), data_format=_tf_data_format(self))

        def depthwise(kernel):
            return tf.nn.depthwise_conv2d(inputs, kernel, strides=_four_d_strides(self), dilations=self.dilation_rate, **options)

        def pointwise(x, kernel):
            return tf.nn.conv2d(x, kernel, strides=1, padding="VALID", data_format=options["data_format"])

        middle = plus_per_row(depthwise(bases[0]), coefficient, depthwise(deltas[0]))
        return plus_per_row(pointwise(middle, bases[1]), coefficient, pointwise(middle, deltas[1]))

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
