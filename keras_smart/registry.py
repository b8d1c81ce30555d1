"""Which Keras layer each conversion method swaps, and which kernels every layer computes with."""

import math

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart import validation
from keras_smart import layers as cl

keras = _compat.keras

_SMART = {
    keras.layers.Conv1D: cl.DualMaskConv1D,
    keras.layers.Conv2D: cl.DualMaskConv2D,
    keras.layers.Conv3D: cl.DualMaskConv3D,
    keras.layers.Conv2DTranspose: cl.DualMaskConv2DTranspose,
    keras.layers.DepthwiseConv2D: cl.DualMaskDepthwiseConv2D,
    keras.layers.SeparableConv2D: cl.DualMaskSeparableConv2D,
    keras.layers.Dense: cl.DualMaskDense,
    keras.layers.EinsumDense: cl.DualMaskEinsumDense,
    keras.layers.MultiHeadAttention: cl.DualMaskMultiHeadAttention,
    keras.layers.BatchNormalization: cl.DualBatchNormalization,
    keras.layers.LayerNormalization: cl.DualLayerNormalization,
}
_FLOAT = {
    keras.layers.Conv1D: cl.NoisyConv1D,
    keras.layers.Conv2D: cl.NoisyConv2D,
    keras.layers.Conv3D: cl.NoisyConv3D,
    keras.layers.Conv2DTranspose: cl.NoisyConv2DTranspose,
    keras.layers.DepthwiseConv2D: cl.NoisyDepthwiseConv2D,
    keras.layers.SeparableConv2D: cl.NoisySeparableConv2D,
    keras.layers.Dense: cl.NoisyDense,
    keras.layers.EinsumDense: cl.NoisyEinsumDense,
    keras.layers.MultiHeadAttention: cl.NoisyMultiHeadAttention,
    keras.layers.BatchNormalization: cl.DualBatchNormalization,
    keras.layers.LayerNormalization: cl.DualLayerNormalization,
}
_OAT = {
    keras.layers.BatchNormalization: cl.FiLMDualBatchNormalization,
    keras.layers.LayerNormalization: cl.DualLayerNormalization,
}

SWAPS = {
    config_lib.Method.SMART: _SMART,
    config_lib.Method.FLOAT: _FLOAT,
    config_lib.Method.FLOATS: _FLOAT,
    config_lib.Method.OAT: _OAT,
}

# Options a method sets itself; a user cannot override them.
FIXED_OPTIONS = {config_lib.Method.FLOATS: {"masked": True}, config_lib.Method.FLOAT: {"masked": False}}

# What `keras_smart.quantization.binary_relax` swaps a plain kernel layer for (relaxed, no masks or noise).
QUANTIZED = {
    keras.layers.Conv1D: cl.QuantizedConv1D,
    keras.layers.Conv2D: cl.QuantizedConv2D,
    keras.layers.Conv3D: cl.QuantizedConv3D,
    keras.layers.Conv2DTranspose: cl.QuantizedConv2DTranspose,
    keras.layers.DepthwiseConv2D: cl.QuantizedDepthwiseConv2D,
    keras.layers.SeparableConv2D: cl.QuantizedSeparableConv2D,
    keras.layers.Dense: cl.QuantizedDense,
    keras.layers.EinsumDense: cl.QuantizedEinsumDense,
}

CONDITIONAL_CLASSES = tuple(
    {cls.__name__: cls for swaps in (*SWAPS.values(), QUANTIZED) for cls in swaps.values()}.values()
)

# Layer arguments only `binary_relax` sets: never `convert` options.
_NOT_CONVERT_OPTIONS = {"quantization"}


def accepted_options(method):
    """The `convert` options a method accepts (the conditional layers' own arguments)."""
    fixed = FIXED_OPTIONS.get(method, {})
    return sorted(
        {key for cls in SWAPS[method].values() for key in cls.conditional_config_keys}
        - set(fixed)
        - _NOT_CONVERT_OPTIONS
    )


def layer_options(method, conditional_class, options):
    """The subset of `options` (plus the method's fixed ones) that `conditional_class` takes."""
    merged = {**options, **FIXED_OPTIONS.get(method, {})}
    return {k: v for k, v in merged.items() if k in conditional_class.conditional_config_keys}


# Options renamed in this release: the old name works, with a DeprecationWarning, until the next.
_RENAMED_OPTIONS = {"film_lambdas": "film_tradeoffs"}


def renamed_options(options):
    """`options` with old option names replaced by their new ones (warning once per old name)."""
    renamed = dict(options)
    for old, new in _RENAMED_OPTIONS.items():
        if old in renamed:
            value = validation.renamed_argument("convert", old, renamed.pop(old), new, renamed.get(new))
            renamed[new] = value
    return renamed


def check_options(method, options):
    """Raises for options that no layer of `method` accepts, or values a layer would reject."""
    accepted = accepted_options(method)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        hint = " Quantize with keras_smart.quantization.binary_relax(model)." if "quantization" in unknown else ""
        raise ValueError(
            f"Unknown option(s) {unknown} for method='{method.value}'. Accepted: {accepted}.{hint}"
        )
    for conditional_class in set(SWAPS[method].values()):
        conditional_class.check_options(**layer_options(method, conditional_class, options))


def custom_objects():
    """{name: class} for every conditional class, by plain and by registered name."""
    objects = {}
    for cls in CONDITIONAL_CLASSES:
        objects[cls.__name__] = cls
        objects[f"keras_smart>{cls.__name__}"] = cls
    return objects


# --- which kernels a layer computes with (plain or conditional): masks, counts and pruning read this ---

# Most specific class first along a layer's MRO (in tf_keras DepthwiseConv2D subclasses Conv2D).
_KERNELS = {
    keras.layers.SeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
    keras.layers.DepthwiseConv2D: (_compat.DEPTHWISE_KERNEL,),
    keras.layers.Conv1D: ("kernel",),
    keras.layers.Conv2D: ("kernel",),
    keras.layers.Conv3D: ("kernel",),
    keras.layers.Conv2DTranspose: ("kernel",),
    keras.layers.Dense: ("kernel",),
    keras.layers.EinsumDense: ("kernel",),
}
_TRANSPOSED = (keras.layers.Conv2DTranspose,)


def kernel_names(layer):
    """The names of the kernels `layer` multiplies its input by ("kernel", ...); () for other layers.

    Conditional layers answer for themselves; plain layers by their Keras class
    (subclasses included). Biases, batch-norm and other weights are not kernels.
    """
    if isinstance(layer, cl.ConditionalKernel):
        return tuple(layer.kernel_names)
    for cls in type(layer).__mro__:
        if cls in _KERNELS:
            return _KERNELS[cls]
    return ()


def kernel_positions(layer):
    """How many times each kernel weight of `layer` is applied per example; None if not static.

    Output positions for convolutions (input positions for transposed ones) and
    for Dense; for EinsumDense, the output elements per kernel output element.
    """
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_positions(layer)
    try:
        tensor = layer.input if isinstance(layer, _TRANSPOSED) else layer.output
        shape = list(tensor.shape[1:])
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(layer, keras.layers.Dense):
        del shape[-1]
    else:
        del shape[0 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1]
    if any(d is None for d in shape):
        return None
    return int(math.prod(shape))


def _einsum_positions(layer):
    """Output elements per example each kernel weight is applied for: the sizes of the output axes
    the kernel does not span (batch excluded), from the input shape the layer was built with."""
    input_shape = (layer.get_build_config() or {}).get("input_shape")
    if input_shape is None:
        return None
    input_shape = list(input_shape)
    input_spec, rest = layer.equation.replace(" ", "").split(",")
    kernel_spec, output_spec = rest.split("->")
    if input_spec.startswith("..."):  # the ellipsis covers the batch axis and any axes after it
        letters = input_spec[3:]
        split = len(input_shape) - len(letters)
        sizes, elided, batch = dict(zip(letters, input_shape[split:])), input_shape[1:split], None
    else:  # the first letter is the batch axis; a trailing ellipsis covers the last axes
        letters = input_spec.replace("...", "")
        sizes, elided, batch = dict(zip(letters, input_shape)), input_shape[len(letters):], letters[0]
    free = [sizes[c] for c in output_spec.replace("...", "") if c not in kernel_spec and c != batch] + elided
    if any(d is None for d in free):
        return None
    return int(math.prod(free))


# --- which method made a model --------------------------------------------------------------------


def method_of(model):
    """The conversion `Method` a model's conditional layers come from, or None.

    Read from the layers, so it also answers for a model loaded from a `.keras`
    file: dual-mask kernels mean SMART, noisy kernels FLOAT (FLOATS when they
    carry a mask), FiLM layers OAT; plain quantized layers (`binary_relax` of a
    plain model) count for no method. None for a plain model, a model with only
    dual normalisation layers (every kernel skipped), or a mix of methods.

    Example:
      >>> method_of(keras_smart.convert(cnn, "floats")).value
      'floats'
    """
    kinds = set()
    quantized_plain = tuple(QUANTIZED.values())
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, quantized_plain):  # no masks, no noise: no method
            continue
        if isinstance(layer, cl.ConditionalKernel):
            if layer.mask_kind == "dual":
                kinds.add(config_lib.Method.SMART)
            else:
                kinds.add(config_lib.Method.FLOATS if layer.mask_kind == "single" else config_lib.Method.FLOAT)
        elif isinstance(layer, cl.FiLMDualBatchNormalization):
            kinds.add(config_lib.Method.OAT)
    return kinds.pop() if len(kinds) == 1 else None
