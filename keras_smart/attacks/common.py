"""What every gradient attack shares: argument checks, the loss, norm-ball steps and projections."""

import numpy as np
import tensorflow as tf

from keras_smart import config as config_lib
from keras_smart import labels as labels_lib
from keras_smart import validation

TINY = 1e-12  # keeps divisions by a norm or a logit spread finite


def check_attack_settings(eps, norm, eot_samples):
    """Checks the settings every attack takes; returns (the `Norm`, eot_samples as an int).

    Raises:
      TypeError / ValueError: eps not a number > 0 (a tensor or variable, e.g.
        a schedule, passes unchecked), an unknown norm, eot_samples not an int >= 1.
    """
    check_budget(eps, "eps")
    norm = config_lib.coerce_enum(config_lib.Norm, norm, "norm")
    return norm, validation.check_int(eot_samples, "eot_samples", minimum=1)


def check_budget(value, name):
    """Raises unless `value` is a number > 0; a tensor or variable (a schedule) passes unchecked."""
    if not isinstance(value, (tf.Tensor, tf.Variable)):
        validation.check_positive(value, name)


def default_loss(labels, logits):
    """Per-example cross-entropy from logits; labels as `keras_smart.labels` reads them (ids [B] or [B, 1], or rows)."""
    return labels_lib.cross_entropy(labels, logits)


def loss_and_gradient(model_fn, x, loss_fn, eot_samples=1):
    """Per-example loss, its gradient at x and the logits, averaged over `eot_samples` forward passes.

    Expectation over transformation (Athalye et al. 2018): for a randomised model
    (weight noise drawn on every call) the gradient of the expected loss is the
    mean of the per-draw gradients. The draws run in a `tf.while_loop`, so inside
    `tf.function` one random op executes k times (k distinct draws, also with a
    fixed op seed). A loss with no path to x (a non-differentiable layer) has a
    zero gradient rather than None.

    Args:
      model_fn: a callable mapping inputs to logits.
      x: the input batch (a tensor).
      loss_fn: `loss_fn(logits)` -> per-example loss (labels bound in the closure).
      eot_samples: forward passes to average over (int >= 1).

    Returns:
      (loss [batch] float32, gradient like x, logits float32), each the mean over the draws.
    """

    def one_draw():
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = model_fn(x)
            loss = tf.cast(loss_fn(logits), tf.float32)
            total = tf.reduce_sum(loss)
        grad = tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, grad, tf.cast(logits, tf.float32)

    if eot_samples == 1:
        return one_draw()

    def body(i, loss_sum, grad_sum, logits_sum):
        loss, grad, logits = one_draw()
        logits_sum = tf.cond(i > 0, lambda: logits_sum + logits, lambda: logits)
        return i + 1, loss_sum + loss, grad_sum + grad, logits_sum

    batch = tf.shape(x)[:1]
    start = (tf.constant(0), tf.zeros(batch, tf.float32), tf.zeros_like(x), tf.zeros([0], tf.float32))
    _, loss, grad, logits = tf.while_loop(
        lambda i, *_: i < eot_samples,
        body,
        start,
        shape_invariants=(
            tf.TensorShape([]), tf.TensorShape([None]), x.shape, tf.TensorShape(None)
        ),
        # One iteration at a time: each draw then meets the same iteration on every run, so the sum
        # (and a seeded evaluation of a noisy model) is the same from run to run.
        parallel_iterations=1,
    )
    k = tf.constant(float(eot_samples), tf.float32)
    return loss / k, grad / tf.cast(k, grad.dtype), logits / k


def loss_gradient(model_fn, x, y, loss_fn, targeted, eot_samples=1):
    """The gradient of the (summed, per-example) loss at x: ascend it untargeted, descend targeted.

    With `eot_samples` > 1, the mean gradient over that many forward passes (see
    `loss_and_gradient`).
    """
    _, grad, _ = loss_and_gradient(model_fn, x, lambda logits: loss_fn(y, logits), eot_samples)
    return -grad if targeted else grad


def _per_example_l2(t):
    axes = list(range(1, t.shape.rank))
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True))


def step(grad, size, norm):
    """A step of length `size` in the norm's steepest-ascent direction."""
    if norm == config_lib.Norm.LINF:
        return size * tf.sign(grad)
    return size * grad / (_per_example_l2(grad) + TINY)


def project(delta, eps, norm):
    """`delta` projected onto the eps-ball of the norm."""
    if norm == config_lib.Norm.LINF:
        return tf.clip_by_value(delta, -eps, eps)
    return delta * tf.minimum(1.0, eps / (_per_example_l2(delta) + TINY))


SEED_HELP = "None, an int (an op seed) or a stateless seed, an int tensor of shape [2]"


def check_seed(seed):
    """`seed` as the random draws take it: None, an int op seed, or a stateless seed as an int64 tensor [2].

    A stateless seed (e.g. [run seed, optimizer step]) makes the draws a pure
    function of it: the same seed gives the same start in any process, which
    is what lets a resumed training run repeat an uninterrupted one.

    Raises:
      TypeError / ValueError: anything else (a float, a bool, a string, an int
        tensor of another shape), saying what was expected and what was received.

    Example:
      >>> check_seed(tf.constant([0, 7]))
      <tf.Tensor: shape=(2,), dtype=int64, numpy=array([0, 7])>
      >>> check_seed(3)
      3
    """
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_))):
        return None if seed is None else int(seed)
    if isinstance(seed, (tf.Tensor, tf.Variable, np.ndarray, tuple, list)):
        dtype = seed.dtype if isinstance(seed, (tf.Tensor, tf.Variable)) else tf.as_dtype(np.asarray(seed).dtype)
        if dtype.is_integer:
            seed = tf.convert_to_tensor(seed)
            if seed.shape.is_compatible_with([2]) and seed.shape.rank == 1:
                return tf.cast(seed, tf.int64)
            raise ValueError(f"`seed` must be {SEED_HELP}. Received: an int seed of shape {seed.shape}")
        raise TypeError(f"`seed` must be {SEED_HELP}. Received: a seed of dtype {dtype.name}")
    raise TypeError(f"`seed` must be {SEED_HELP}. Received: seed={seed!r} of type {type(seed).__name__}")


def uniform(shape, seed, dtype, minval=0.0, maxval=1.0):
    """Uniform draws in [minval, maxval): stateless for a stateless seed (see `check_seed`), else the op seed's."""
    if isinstance(seed, tf.Tensor):
        return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype)
    return tf.random.uniform(shape, minval, maxval, dtype=dtype, seed=seed)


def normal(shape, seed, dtype):
    """Standard normal draws: stateless for a stateless seed (see `check_seed`), else the op seed's."""
    if isinstance(seed, tf.Tensor):
        return tf.random.stateless_normal(shape, seed, dtype=dtype)
    return tf.random.normal(shape, dtype=dtype, seed=seed)


def random_start(x, eps, norm, seed=None):
    """A uniform random point of the eps-ball around 0, with x's shape.

    Args:
      x: the batch (its shape and dtype are used).
      eps: the ball's radius.
      norm: a `keras_smart.config.Norm`.
      seed: None, an int (the op seed of TensorFlow's stateful random ops), or
        a stateless seed, an int tensor of shape [2] (`tf.random.stateless_*`:
        the same seed always draws the same start, also inside `tf.function`).

    Raises:
      TypeError / ValueError: a seed of another kind (see `check_seed`).

    Example:
      >>> seed = tf.constant([0, 7], tf.int64)
      >>> a = random_start(x[:2], 0.1, keras_smart.config.Norm.LINF, seed)
      >>> bool(tf.reduce_all(a == random_start(x[:2], 0.1, keras_smart.config.Norm.LINF, seed)))
      True
    """
    seed = check_seed(seed)
    if norm == config_lib.Norm.LINF:
        return uniform(tf.shape(x), seed, x.dtype, -1.0, 1.0) * eps
    direction = normal(tf.shape(x), seed, x.dtype)
    direction = direction / (_per_example_l2(direction) + TINY)
    size = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
    per_example = tf.concat([tf.shape(x)[:1], tf.ones([x.shape.rank - 1], tf.int32)], 0)
    # A stateless seed draws the radius from its own stream (the same seed's uniform stream shares Philox counters).
    radius_seed = tf.random.experimental.stateless_fold_in(seed, 1) if isinstance(seed, tf.Tensor) else seed
    radius = uniform(per_example, radius_seed, x.dtype)
    return direction * eps * radius ** (1.0 / size)


def clip(x, clip_min, clip_max):
    if clip_min is None and clip_max is None:
        return x
    low = x.dtype.min if clip_min is None else clip_min
    high = x.dtype.max if clip_max is None else clip_max
    return tf.clip_by_value(x, low, high)
