"""The Square attack (Andriushchenko et al. 2020), L-inf: gradient-free random search, as an in-graph loop.

Square needs no gradients, so a model that hides its gradients (non-differentiable
or saturating layers) cannot hide from it: AutoAttack uses it as its
gradient-masking safeguard. This follows the authors' reference code
(`square_attack_linf`): vertical-stripe initialisation; then each query moves one
s x s window of each example to a random corner of the eps-box (one sign per
channel) and keeps the move if it lowers the margin z_y - max_{j != y} z_j;
the window's area shrinks on the reference schedule (p_init, halved at 0.1%,
0.5%, 2%, 5%, 10%, 20%, 40%, 60%, 80% of the queries). Windows are drawn per
example (IBM ART's port draws one window for the whole batch).
"""

import numbers

import tensorflow as tf

from keras_smart import config as config_lib
from keras_smart import labels as labels_lib
from keras_smart.attacks import common

# The reference schedule: at these shares of the queries (x 10,000) the window's area halves.
_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_fraction(query, queries, p_init=0.8):
    """The share of the image a window covers at `query` (0-based) of `queries` (reference `p_selection`).

    Example:
      >>> float(window_fraction(0, 5000)), float(window_fraction(4999, 5000))
      (0.8, 0.0015625)
    """
    step = tf.cast(tf.cast(query, tf.float32) / float(queries) * 10000.0, tf.int32)
    halvings = tf.reduce_sum(tf.cast(step > tf.constant(_SCHEDULE), tf.int32))
    # The reference keeps p_init beyond 10,000 (never reached) and halves once per interval passed.
    return p_init * tf.pow(0.5, tf.cast(halvings, tf.float32))


def _margin(logits, labels):
    logits = tf.cast(logits, tf.float32)
    true = tf.gather(logits, labels, batch_dims=1)
    others = tf.where(tf.one_hot(labels, tf.shape(logits)[-1]) > 0, tf.float32.min, logits)
    return true - tf.reduce_max(others, axis=-1)


def _mean_logits(model_fn, x, eot_samples):
    if eot_samples == 1:
        return tf.cast(model_fn(x), tf.float32)

    def body(i, total):
        logits = tf.cast(model_fn(x), tf.float32)
        return i + 1, tf.cond(i > 0, lambda: total + logits, lambda: logits)

    _, total = tf.while_loop(
        lambda i, _: i < eot_samples, body, (tf.constant(0), tf.zeros([0], tf.float32)),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape(None)),
    )
    return total / float(eot_samples)


def square(
    model_fn,
    x,
    y,
    *,
    eps,
    queries=5000,
    p_init=0.8,
    norm="linf",
    clip_min=0.0,
    clip_max=1.0,
    seed=None,
    eot_samples=1,
):
    """Square attack (L-inf, untargeted, margin loss) on a batch of images, channels last.

    Args:
      model_fn: a callable mapping images [batch, height, width, channels] to logits.
      x: a batch of images.
      y: true labels: integer ids [batch] or [batch, 1], or one-hot / soft rows
        (soft rows count as their argmax class; see `keras_smart.labels`).
      eps: the L-inf budget (> 0).
      queries: model queries per example (AutoAttack: 5,000), the initial one included.
      p_init: the initial share of the image a window covers (0.8).
      norm: "linf" (the only norm implemented in-graph; IBM ART's `SquareAttack`
        covers L2 -- `keras_smart.evaluate_tradeoff` uses it for norm="l2").
      clip_min, clip_max: the valid input range.
      seed: seed of the random windows and signs.
      eot_samples: forward passes each margin averages over (for randomised models).

    Returns:
      The adversarial batch: per example, the point with the lowest margin found
      (the search stops for an example once it is misclassified).

    Raises:
      ValueError: a non-image input, norm other than "linf", bad queries/p_init/eot_samples.

    Example:
      >>> x_adv = square(lambda t: model(t, training=False), x, y, eps=0.3, queries=1000)
    """
    common.check_positive(eps, "eps")
    if common.check_norm(norm) != config_lib.Norm.LINF:
        raise ValueError(
            "The in-graph Square attack is L-inf only. For L2 use IBM ART's SquareAttack (through "
            "keras_smart.evaluation.as_art_classifier), as evaluate_tradeoff does for norm='l2'."
        )
    queries = common.check_steps(queries)
    eot_samples = common.check_eot_samples(eot_samples)
    if isinstance(p_init, bool) or not isinstance(p_init, numbers.Real) or not 0.0 < p_init <= 1.0:
        raise ValueError(f"`p_init` must be in (0, 1]. Received: p_init={p_init!r}")
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    if x.shape.rank != 4:
        raise ValueError(f"Square perturbs images [batch, height, width, channels]. Received shape {x.shape}")
    eps = tf.cast(eps, x.dtype)
    shape = tf.shape(x)
    batch, height, width, channels = (x.shape[i] if x.shape[i] is not None else shape[i] for i in range(4))

    def op_seed(offset):
        # Random ops that share an op seed draw the same stream: give each its own.
        return None if seed is None else seed + offset

    def random_signs(size, offset):
        return tf.where(tf.random.uniform(size, seed=op_seed(offset)) < 0.5, -1.0, 1.0)

    # Vertical stripes: one sign per column and channel.
    x_best = common.clip(x + eps * tf.cast(random_signs([batch, 1, width, channels], 0), x.dtype), clip_min, clip_max)
    logits_best = _mean_logits(model_fn, x_best, eot_samples)
    labels = labels_lib.ids_tensor(y, logits_best)  # read once, against the model's class count
    margin_best = _margin(logits_best, labels)

    def margin(images):
        return _margin(_mean_logits(model_fn, images, eot_samples), labels)

    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]

    def body(query, x_best, margin_best):
        p = window_fraction(query - 1, queries, p_init)
        area = tf.cast(height * width, tf.float32)
        side = tf.cast(tf.round(tf.sqrt(p * area)), tf.int32)
        side = tf.clip_by_value(side, 1, tf.maximum(tf.minimum(height, width) - 1, 1))
        top = tf.random.uniform([batch], 0, tf.maximum(height - side, 1), dtype=tf.int32, seed=op_seed(2))
        left = tf.random.uniform([batch], 0, tf.maximum(width - side, 1), dtype=tf.int32, seed=op_seed(3))
        window = (
            (rows >= top[:, None, None]) & (rows < (top + side)[:, None, None])
            & (cols >= left[:, None, None]) & (cols < (left + side)[:, None, None])
        )[..., None]  # [batch, height, width, 1]
        signs = tf.cast(random_signs([batch, 1, 1, channels], 1), x.dtype)

        def candidate(signs):
            delta = tf.where(window, eps * signs, x_best - x)
            return common.clip(x + delta, clip_min, clip_max)

        # A move that leaves the window as it is wastes a query: flip those channels' signs.
        first = candidate(signs)
        unchanged = tf.reduce_all(
            tf.logical_or(tf.abs(first - x_best) < 1e-7, tf.logical_not(window)), axis=[1, 2], keepdims=True
        )
        moved = candidate(tf.where(unchanged, -signs, signs))
        margin_new = margin(moved)
        improved = (margin_new < margin_best) & (margin_best > 0.0)
        x_best = tf.where(improved[:, None, None, None], moved, x_best)
        margin_best = tf.where(improved, margin_new, margin_best)
        return query + 1, tf.ensure_shape(tf.stop_gradient(x_best), x.shape), margin_best

    _, x_best, _ = tf.while_loop(
        lambda query, _, margin_best: (query < queries) & tf.reduce_any(margin_best > 0.0),
        body,
        (tf.constant(1), x_best, margin_best),
    )
    return tf.stop_gradient(x_best)
