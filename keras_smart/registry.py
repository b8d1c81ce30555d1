"""Which Keras layer each conversion method swaps, and for which conditional layer."""

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart import layers as cl

keras = _compat.keras

_SMART = {
    keras.layers.Conv2D: cl.DualMaskConv2D,
    keras.layers.DepthwiseConv2D: cl.DualMaskDepthwiseConv2D,
    keras.layers.SeparableConv2D: cl.DualMaskSeparableConv2D,
    keras.layers.Dense: cl.DualMaskDense,
    keras.layers.BatchNormalization: cl.DualBatchNormalization,
}
_FLOAT = {
    keras.layers.Conv2D: cl.NoisyConv2D,
    keras.layers.DepthwiseConv2D: cl.NoisyDepthwiseConv2D,
    keras.layers.SeparableConv2D: cl.NoisySeparableConv2D,
    keras.layers.Dense: cl.NoisyDense,
    keras.layers.BatchNormalization: cl.DualBatchNormalization,
}
_OAT = {keras.layers.BatchNormalization: cl.FiLMDualBatchNormalization}

SWAPS = {
    config_lib.Method.SMART: _SMART,
    config_lib.Method.FLOAT: _FLOAT,
    config_lib.Method.FLOATS: _FLOAT,
    config_lib.Method.OAT: _OAT,
}

# Options a method sets itself; a user cannot override them.
FIXED_OPTIONS = {config_lib.Method.FLOATS: {"masked": True}, config_lib.Method.FLOAT: {"masked": False}}

CONDITIONAL_CLASSES = tuple(
    {cls.__name__: cls for swaps in SWAPS.values() for cls in swaps.values()}.values()
)


def accepted_options(method):
    """The `convert` options a method accepts (the conditional layers' own arguments)."""
    fixed = FIXED_OPTIONS.get(method, {})
    return sorted(
        {key for cls in SWAPS[method].values() for key in cls.conditional_config_keys} - set(fixed)
    )


def layer_options(method, conditional_class, options):
    """The subset of `options` (plus the method's fixed ones) that `conditional_class` takes."""
    merged = {**options, **FIXED_OPTIONS.get(method, {})}
    return {k: v for k, v in merged.items() if k in conditional_class.conditional_config_keys}


def check_options(method, options):
    """Raises for options that no layer of `method` accepts, or values a layer would reject."""
    accepted = accepted_options(method)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for method='{method.value}'. Accepted: {accepted}"
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
