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

import tensorflow as tf

from keras_smart import config as config_lib
from keras_smart import labels as labels_lib
from keras_smart import validation
from keras_smart.attacks import common

# The reference schedule: at these shares of the queries (x 10,000) the window's area halves.
_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_fraction(query, queries, p_init=0.8):
    """The share of the image a window covers at `query` (0-based) of `queries` (reference `p_selection`).

    Example:
      >>> round(float(window_fraction(0, 5000)), 6), round(float(window_fraction(4999, 5000)), 7)
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
      TypeError / ValueError: a non-image input, norm other than "linf", bad
        eps/queries/p_init/eot_samples.

    Example:
      >>> x_adv = square(lambda t: smart(t, training=False), x[:8], y[:8], eps=0.1, queries=5, seed=0)
      >>> x_adv.shape, float(tf.reduce_max(tf.abs(x_adv - x[:8]))) <= 0.1 + 1e-6
      (TensorShape([8, 28, 28, 1]), True)
    """
    queries, eot_samples, p_init = _check_settings(eps, queries, p_init, norm, eot_samples)
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    if x.shape.rank != 4:
        raise ValueError(f"Square perturbs images [batch, height, width, channels]. Received shape {x.shape}")
    search = _Search(model_fn, x, tf.cast(eps, x.dtype), queries, p_init, clip_min, clip_max, seed, eot_samples)
    x_best, margin_best = search.start(y)
    _, x_best, _ = tf.while_loop(
        lambda query, _, margin_best: (query < queries) & tf.reduce_any(margin_best > 0.0),
        search,
        (tf.constant(1), x_best, margin_best),
    )
    return tf.stop_gradient(x_best)


def _check_settings(eps, queries, p_init, norm, eot_samples):
    """Checks square's settings; returns (queries, eot_samples, p_init)."""
    norm, eot_samples = common.check_attack_settings(eps, norm, eot_samples)
    if norm != config_lib.Norm.LINF:
        raise ValueError(
            "The in-graph Square attack is L-inf only. For L2 use IBM ART's SquareAttack (through "
            "keras_smart.evaluation.as_art_classifier), as evaluate_tradeoff does for norm='l2'."
        )
    queries = validation.check_int(queries, "queries", minimum=1)
    p_init = validation.check_real(p_init, "p_init", low=0.0, high=1.0, low_open=True)
    return queries, eot_samples, p_init


class _Search:
    """Square's random search over a batch: the stripes start, then the `tf.while_loop` body (one query)."""

    def __init__(self, model_fn, x, eps, queries, p_init, clip_min, clip_max, seed, eot_samples):
        self._model_fn = model_fn
        self._x = x
        self._eps = eps
        self._queries = queries
        self._p_init = p_init
        self._clip = lambda images: common.clip(images, clip_min, clip_max)
        self._seed = seed
        self._eot_samples = eot_samples
        shape = tf.shape(x)
        self._batch, self._height, self._width, self._channels = (
            x.shape[i] if x.shape[i] is not None else shape[i] for i in range(4)
        )
        self._labels = self._rows = self._cols = None

    def _op_seed(self, offset):
        # Random ops that share an op seed draw the same stream: give each its own.
        return None if self._seed is None else self._seed + offset

    def _random_signs(self, size, offset):
        return tf.where(tf.random.uniform(size, seed=self._op_seed(offset)) < 0.5, -1.0, 1.0)

    def _margin(self, images):
        return _margin(_mean_logits(self._model_fn, images, self._eot_samples), self._labels)

    def start(self, y):
        """(x_best, margin_best) at vertical stripes: one sign per column and channel."""
        stripes = self._random_signs([self._batch, 1, self._width, self._channels], 0)
        x_best = self._clip(self._x + self._eps * tf.cast(stripes, self._x.dtype))
        logits_best = _mean_logits(self._model_fn, x_best, self._eot_samples)
        self._labels = labels_lib.ids_tensor(y, logits_best)  # read once, against the model's class count
        margin_best = _margin(logits_best, self._labels)
        self._rows = tf.range(self._height)[None, :, None]
        self._cols = tf.range(self._width)[None, None, :]
        return x_best, margin_best

    def __call__(self, query, x_best, margin_best):
        """One query per example: move a random window to a random corner; keep it if the margin drops."""
        window = self._random_window(query)
        signs = tf.cast(self._random_signs([self._batch, 1, 1, self._channels], 1), self._x.dtype)
        # A move that leaves the window as it is wastes a query: flip those channels' signs.
        first = self._candidate(window, signs, x_best)
        unchanged = tf.reduce_all(
            tf.logical_or(tf.abs(first - x_best) < 1e-7, tf.logical_not(window)), axis=[1, 2], keepdims=True
        )
        moved = self._candidate(window, tf.where(unchanged, -signs, signs), x_best)
        margin_new = self._margin(moved)
        improved = (margin_new < margin_best) & (margin_best > 0.0)
        x_best = tf.where(improved[:, None, None, None], moved, x_best)
        margin_best = tf.where(improved, margin_new, margin_best)
        return query + 1, tf.ensure_shape(tf.stop_gradient(x_best), self._x.shape), margin_best

    def _random_window(self, query):
        """[batch, height, width, 1]: per example, a random square of the side the schedule gives."""
        height, width = self._height, self._width
        p = window_fraction(query - 1, self._queries, self._p_init)
        area = tf.cast(height * width, tf.float32)
        side = tf.cast(tf.round(tf.sqrt(p * area)), tf.int32)
        side = tf.clip_by_value(side, 1, tf.maximum(tf.minimum(height, width) - 1, 1))
        top = tf.random.uniform([self._batch], 0, tf.maximum(height - side, 1), dtype=tf.int32, seed=self._op_seed(2))
        left = tf.random.uniform([self._batch], 0, tf.maximum(width - side, 1), dtype=tf.int32, seed=self._op_seed(3))
        rows, cols = self._rows, self._cols
        return (
            (rows >= top[:, None, None]) & (rows < (top + side)[:, None, None])
            & (cols >= left[:, None, None]) & (cols < (left + side)[:, None, None])
        )[..., None]

    def _candidate(self, window, signs, x_best):
        """x_best with the window moved to eps * signs, in the clip range."""
        delta = tf.where(window, self._eps * signs, x_best - self._x)
        return self._clip(self._x + delta)
