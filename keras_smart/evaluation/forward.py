"""The model as the attacks see it: logits, batch-norm in inference mode, noise drawn or at its mean.

Also the model's declared input shape and the valid input range attacks clip to.
Randomness stays local: a function compiled here with a `seed` seeds only its
own graph (TensorFlow's graph-level seed, set while tracing), so an evaluation
reproduces from its `seed` and leaves TensorFlow's global seed, and every draw a
user makes after it, as they were.
"""

import contextlib
import functools

import tensorflow as tf

from keras_smart import validation
from keras_smart.layers import base

NOISE_MODES = ("sample", "expected")


def check_noise(noise):
    """`noise` if it is "sample" or "expected"."""
    if noise not in NOISE_MODES:
        raise ValueError(
            "`noise` must be 'sample' (noisy methods draw fresh weight noise on every call, as trained) or "
            f"'expected' (noise at its mean, what strip/export compute). Received: noise={noise!r}"
        )
    return noise


class Forward:
    """The model as attacks see it: logits, batch-norm in inference mode, noise drawn or at its mean.

    A model with several outputs (a multi-exit model) gives a list of logits,
    one per exit, earliest first. `tradeoff` (a float) fixes the trade-off
    through `tradeoff_override`; None reads the model's trade-off variable.
    The scopes are read at trace time, so they wrap the call itself.

    Example:
      >>> logits = Forward(smart, tradeoff=1.0, expected_noise=True)(x[:2])
      >>> logits.shape, logits.dtype.name
      (TensorShape([2, 10]), 'float32')
    """

    def __init__(self, model, tradeoff=None, expected_noise=False):
        self.model = model
        self.tradeoff = tradeoff
        self.expected_noise = expected_noise

    def __call__(self, x, training=False):
        with contextlib.ExitStack() as scopes:
            if self.tradeoff is not None:
                scopes.enter_context(base.tradeoff_override(self.tradeoff))
            if self.expected_noise:
                scopes.enter_context(base.expected_noise())
            outputs = self.model(x, training=training)
            if isinstance(outputs, (list, tuple)):  # a multi-exit model: one logits tensor per exit
                return [tf.cast(o, tf.float32) for o in outputs]
            return tf.cast(outputs, tf.float32)


def compile_fn(fn, *input_signature, seed=None):
    """`tf.function(fn)`, its random ops seeded by `seed` (None: unseeded), keyed by a fresh object.

    The seed is the traced graph's own (TensorFlow's graph-level seed, set
    inside the function while it is traced): ops without an op seed (e.g. weight
    noise) draw a stream fixed by `seed`, the same in every function compiled
    with it, and TensorFlow's global seed is not touched.

    Each evaluation builds its functions anew from the same code; keyed by code,
    TensorFlow would report them as one function "retracing" after a few evaluations.

    Example:
      >>> draw = compile_fn(lambda: tf.random.uniform([2]), seed=3)
      >>> bool(tf.reduce_all(draw() == compile_fn(lambda: tf.random.uniform([2]), seed=3)()))
      True
    """

    def seeded(*args):
        if seed is not None and not tf.executing_eagerly():
            tf.random.set_seed(seed)  # while tracing: the graph-level seed of this function's graph only
        return fn(*args)

    wrapped = functools.partial(seeded)
    if input_signature:
        return tf.function(wrapped, input_signature=list(input_signature))
    return tf.function(wrapped, reduce_retracing=True)


def declared_input_shape(model):
    """The shape of `model`'s (one) input, batch axis included; None when the model declares none."""
    try:
        return tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def check_input_range(values, name):
    """The valid input range `values` = (min, max) as two floats, min < max (attacks clip to it).

    Example:
      >>> check_input_range((0, 255), "input_range")
      (0.0, 255.0)
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != 2:
        raise TypeError(f"`{name}` must be (min, max), two real numbers. Received: {name}={values!r}")
    lo, hi = (validation.check_real(v, f"{name}[{i}]") for i, v in enumerate(values))
    if not lo < hi:
        raise ValueError(f"`{name}` must be (min, max) with min < max. Received: {name}={values!r}")
    return lo, hi
