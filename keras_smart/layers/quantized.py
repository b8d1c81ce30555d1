"""Binary-Relax quantization: the projections Q onto low-bit level sets, and the relaxed kernel.

Binary-Relax (Li, Wang & Xin, arXiv 2008.13305) trains a float kernel W
through the relaxed kernel U = (W + eta * Q(W)) / (1 + eta) and applies the
gradient at U to W; eta grows during training and eta = +inf is exactly Q(W).
Every function here is TensorFlow math, the same in both Keras flavours.
"""

import math

import numpy as np
import tensorflow as tf

BITS = ("binary", "ternary", "int4")
# Bits one stored weight takes (ternary's three levels are stored in 2 bits).
BITS_PER_WEIGHT = {"binary": 1, "ternary": 2, "int4": 4}

_TERNARY_THRESHOLD = 0.7  # ternary keeps |W| > 0.7 * mean |W|
_INT4_LEVEL = 7  # int4: the 15 symmetric codes -7..7


def check_bits(bits):
    """Returns `bits` if it is one of `BITS`; raises a ValueError naming the choices otherwise."""
    if not isinstance(bits, str) or bits not in BITS:
        raise ValueError(f"`bits` must be one of {list(BITS)}. Received: bits={bits!r}")
    return bits


def check_quantization(quantization):
    """A layer's `quantization` argument normalised to {"bits", "per_channel"}, or None.

    Accepts None, one of `BITS` (per tensor), or a dict with "bits" and an
    optional "per_channel" (default False).

    Example:
      >>> check_quantization("int4")
      {'bits': 'int4', 'per_channel': False}
    """
    if quantization is None:
        return None
    if isinstance(quantization, str):
        quantization = {"bits": quantization}
    if not isinstance(quantization, dict):
        raise TypeError(
            "`quantization` must be None, one of "
            f"{list(BITS)} or a dict {{'bits': ..., 'per_channel': bool}}. Received: {quantization!r}"
        )
    unknown = sorted(set(quantization) - {"bits", "per_channel"})
    if unknown or "bits" not in quantization:
        raise ValueError(
            "`quantization` takes the keys 'bits' (required) and 'per_channel'. "
            f"Received: {sorted(quantization)}"
        )
    per_channel = quantization.get("per_channel", False)
    if not isinstance(per_channel, (bool, np.bool_)):
        raise TypeError(f"`quantization['per_channel']` must be a bool. Received: {per_channel!r}")
    return {"bits": check_bits(quantization["bits"]), "per_channel": bool(per_channel)}


def _reduce_axes(rank, axes):
    """The axes every statistic is taken over: all of them, or all but the output-channel `axes`."""
    if axes is None:
        return list(range(rank))
    kept = {a % rank for a in axes}
    return [a for a in range(rank) if a not in kept]


def _mean_or_repeated(values, weights, axes):
    """Weighted mean of `values` over `axes` (0 where the weights sum to 0), keepdims.

    Where every weighted value is the same, that value itself: so projecting a
    projected kernel gives back exactly the same scale (idempotence with no
    rounding from summing equal numbers).
    """
    count = tf.reduce_sum(weights, axis=axes, keepdims=True)
    mean = tf.math.divide_no_nan(tf.reduce_sum(values * weights, axis=axes, keepdims=True), count)
    inside = weights > 0
    big = tf.reduce_max(tf.where(inside, values, -np.inf), axis=axes, keepdims=True)
    small = tf.reduce_min(tf.where(inside, values, np.inf), axis=axes, keepdims=True)
    return tf.where(tf.equal(big, small), big, mean)


def project(kernel, bits, axes=None, support=None):
    """The projection Q of `kernel` onto the level set of `bits` (same shape and dtype).

    * binary: alpha * sign(W) (sign(0) = +1: binary has no zero level), alpha = mean |W|;
    * ternary: delta = 0.7 * mean |W|, kept = |W| > delta, alpha = mean |W| over
      the kept weights (0 if none), Q = alpha * sign(W) * kept;
    * int4: step d = max |W| / 7, codes q = clip(round(W / d), -7, 7) (15
      symmetric levels), least-squares scale alpha = <W, q> / <q, q>, Q = alpha * q.

    Every projection is idempotent: project(project(W)) == project(W).

    Args:
      kernel: a float tensor (or array).
      bits: one of `BITS`.
      axes: the kernel axes that index output channels (one scale per channel,
        statistics over the other axes), e.g. (-1,) for a Conv2D; None: one
        scale for the whole tensor.
      support: 0/1 tensor of the kernel's shape: the weights that are kept (a
        mask). Q is 0 outside it and the statistics are over it only. None: all.

    Example:
      >>> w = tf.constant([0.1, -0.4, 0.8, -2.0])
      >>> project(w, "binary").numpy().tolist()
      [0.824999988079071, -0.824999988079071, 0.824999988079071, -0.824999988079071]
      >>> project(w, "ternary").numpy().tolist()
      [0.0, 0.0, 1.399999976158142, -1.399999976158142]
    """
    check_bits(bits)
    kernel = tf.convert_to_tensor(kernel)
    dtype = kernel.dtype
    w = tf.cast(kernel, tf.float32)
    s = tf.ones_like(w) if support is None else tf.cast(tf.not_equal(tf.cast(support, tf.float32), 0.0), tf.float32)
    reduce_axes = _reduce_axes(w.shape.rank, axes)
    magnitude = tf.abs(w)
    if bits == "binary":
        alpha = _mean_or_repeated(magnitude, s, reduce_axes)
        q = alpha * tf.where(w >= 0.0, 1.0, -1.0) * s
    elif bits == "ternary":
        delta = _TERNARY_THRESHOLD * tf.math.divide_no_nan(
            tf.reduce_sum(magnitude * s, axis=reduce_axes, keepdims=True),
            tf.reduce_sum(s, axis=reduce_axes, keepdims=True),
        )
        kept = tf.cast(magnitude > delta, tf.float32) * s
        q = _mean_or_repeated(magnitude, kept, reduce_axes) * tf.sign(w) * kept
    else:
        q = _int4(w, s, reduce_axes)
    q = tf.where(tf.equal(q, 0.0), tf.zeros_like(q), q)  # +0, never -0
    return tf.cast(q, dtype)


def _int4(w, s, reduce_axes):
    """Q of the int4 projection (see `project`)."""
    step = tf.reduce_max(tf.abs(w) * s, axis=reduce_axes, keepdims=True) / _INT4_LEVEL
    codes = tf.clip_by_value(tf.round(tf.math.divide_no_nan(w, step)), -_INT4_LEVEL, _INT4_LEVEL) * s
    # The least-squares scale; where W is already alpha * q (all W/q equal), that ratio exactly.
    alpha = tf.math.divide_no_nan(
        tf.reduce_sum(w * codes, axis=reduce_axes, keepdims=True),
        tf.reduce_sum(codes * codes, axis=reduce_axes, keepdims=True),
    )
    nonzero = tf.not_equal(codes, 0.0)
    ratio = tf.math.divide_no_nan(w, codes)
    big = tf.reduce_max(tf.where(nonzero, ratio, -np.inf), axis=reduce_axes, keepdims=True)
    small = tf.reduce_min(tf.where(nonzero, ratio, np.inf), axis=reduce_axes, keepdims=True)
    alpha = _short_mantissa(tf.where(tf.equal(big, small), big, alpha))
    return alpha * codes


def _short_mantissa(value):
    """float32 `value` with its 3 lowest mantissa bits cleared (a relative change below 1e-6).

    Then alpha * q is exact for every code |q| <= 7, so projecting alpha * q
    again finds every W / q equal to alpha, and returns alpha * q exactly.
    """
    bits = tf.bitcast(tf.cast(value, tf.float32), tf.int32)
    return tf.bitcast(tf.bitwise.bitwise_and(bits, tf.constant(~7, tf.int32)), tf.float32)


def relaxed(kernel, bits, eta, axes=None, support=None):
    """Binary-Relax's kernel U = (W + eta * Q(W)) / (1 + eta), whose gradient reaches W unchanged.

    Computed as t * W + (1 - t) * Q(W) with t = 1 / (1 + eta), so eta = +inf
    gives exactly Q(W). The value is U, the gradient with respect to `kernel`
    the identity (the straight-through update of Binary-Relax: the gradient at
    U is applied to W), written `stop_gradient(U) + (W - stop_gradient(W))`,
    which equals U exactly.

    Args:
      kernel: the float kernel W.
      bits, axes, support: as for `project`.
      eta: a scalar >= 0 (Python number or tensor); +inf for pure Q.

    Example:
      >>> w = tf.constant([0.1, -0.4, 0.8, -2.0])
      >>> np.allclose(relaxed(w, "ternary", 1.0), (w + project(w, "ternary")) / 2)
      True
      >>> np.array_equal(relaxed(w, "ternary", float("inf")), project(w, "ternary"))
      True
    """
    kernel = tf.convert_to_tensor(kernel)
    q = project(kernel, bits, axes=axes, support=support)
    t = tf.cast(1.0 / (1.0 + tf.cast(eta, tf.float32)), kernel.dtype)
    u = t * kernel + (1.0 - t) * q
    return tf.stop_gradient(u) + (kernel - tf.stop_gradient(kernel))


def is_pure(eta):
    """Whether a relax_eta value means pure Q (+inf), e.g. after `keras_smart.quantization.finalize`."""
    return math.isinf(float(eta))
