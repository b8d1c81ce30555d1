"""The one rule for labels: integer class ids [N] or [N, 1], or one-hot / soft rows [N, classes]."""

import numbers

import numpy as np
import tensorflow as tf

__all__ = ["class_ids", "cross_entropy", "ids_tensor"]

_FORMS = "integer class ids [N] or [N, 1], or one-hot / soft rows [N, classes]"


def _check_num_classes(num_classes):
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"`num_classes` must be None or an int >= 1. Received: num_classes={num_classes!r}")
    return int(num_classes)


def _rank_error(shape):
    return ValueError(
        f"Labels must be {_FORMS}; received shape {tuple(shape)} (rank {len(shape)}). Reshape them to one "
        "of those forms, e.g. `y.reshape(-1)` for ids."
    )


def _width_error(shape, classes):
    return ValueError(
        f"Labels of shape {tuple(shape)} are read as one-hot / soft rows of {shape[-1]} classes (a last "
        f"dimension > 1), but the model has {classes} classes. Pass rows of width {classes} (e.g. "
        f"`keras.utils.to_categorical(ids, {classes})`) or integer class ids of shape [N] or [N, 1]."
    )


def class_ids(y, num_classes=None):
    """Integer class ids [N] from labels in any of the accepted forms (NumPy, outside the graph).

    The form is decided by shape: rank 1 is ids; rank 2 with a last dimension of 1
    is ids (what `keras.datasets.cifar10.load_data()` returns); rank 2 with a
    last dimension > 1 is one-hot or soft rows, whose argmax is the class.

    Args:
      y: labels: integer ids [N] or [N, 1] (ints, or floats holding whole
        numbers), or one-hot / soft rows [N, classes] (non-negative).
      num_classes: the model's number of classes, or None when unknown (then ids
        are only checked to be >= 0, and rows of any width > 1 are accepted).

    Returns:
      An int64 array [N].

    Raises:
      ValueError: labels of rank 0 or > 2, or of non-numeric dtype; ids that are
        not whole numbers, negative, or >= `num_classes`; rows whose width is not
        `num_classes`, or with negative or non-finite entries; a bad `num_classes`.

    Example:
      >>> class_ids(np.array([[2], [0]]), num_classes=3)
      array([2, 0])
      >>> class_ids(np.eye(3)[[1, 2]])
      array([1, 2])
    """
    classes = _check_num_classes(num_classes)
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"Labels must be numbers ({_FORMS}); received an array of dtype {y.dtype}.")
    if y.ndim not in (1, 2):
        raise _rank_error(y.shape)
    if y.ndim == 2 and y.shape[1] != 1:
        if y.shape[1] == 0:
            raise ValueError(f"Labels must be {_FORMS}; received shape {y.shape}, rows of width 0.")
        if classes is not None and y.shape[1] != classes:
            raise _width_error(y.shape, classes)
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise ValueError(f"One-hot / soft label rows must be finite; rows of shape {y.shape} hold NaN or inf.")
        if np.any(y < 0):
            raise ValueError(
                f"One-hot / soft label rows must be non-negative (class probabilities); rows of shape {y.shape} "
                f"hold {y.min()}. Pass probabilities, not logits, or integer class ids."
            )
        return np.argmax(y, axis=1).astype(np.int64)
    ids = y.reshape(-1)
    if ids.dtype.kind == "f":
        if not np.all(np.isfinite(ids)) or not np.all(np.mod(ids, 1) == 0):
            bad = ids[~(np.isfinite(ids) & (np.mod(np.nan_to_num(ids), 1) == 0))][:5]
            raise ValueError(
                f"Labels of shape {y.shape} are read as class ids, which must be whole numbers; received "
                f"{bad.tolist()}. Pass integer ids, or one-hot / soft rows [N, classes]."
            )
    ids = ids.astype(np.int64)
    if ids.size:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or (classes is not None and high >= classes):
            valid = f"[0, {classes})" if classes is not None else ">= 0"
            raise ValueError(
                f"Class ids must be {valid}"
                + (f" (the model has {classes} classes)" if classes is not None else "")
                + f"; received ids in [{low}, {high}]. Map the labels to 0-based class indices."
            )
    return ids


def _form(y, classes):
    """'ids', 'rows' or 'dynamic' (rank 2 of unknown width), from static shapes; ValueError otherwise."""
    rank = y.shape.rank
    if rank is None:
        raise ValueError(
            f"Labels must be {_FORMS}; received a tensor of unknown rank. Give it a static rank, e.g. with "
            "`tf.ensure_shape(y, [None])`."
        )
    if rank == 1:
        return "ids"
    if rank != 2:
        raise ValueError(
            f"Labels must be {_FORMS}; received shape {y.shape} (rank {rank})"
            + (f" for logits of {classes} classes" if classes is not None else "")
            + ". Reshape them to one of those forms."
        )
    width = y.shape[-1]
    if width is None:
        return "dynamic"
    if width == 1:
        return "ids"
    if width == 0:
        raise ValueError(f"Labels must be {_FORMS}; received shape {y.shape}, rows of width 0.")
    if classes is not None and width != classes:
        raise ValueError(
            f"Labels of shape {y.shape} are read as one-hot / soft rows of {width} classes (a last dimension "
            f"> 1), but the logits have {classes} classes. Pass rows of width {classes} or integer class ids "
            "of shape [N] or [N, 1]."
        )
    return "rows"


def _classes(logits):
    """The logits' class count: static int when known, else a scalar int32 tensor."""
    static = logits.shape[-1] if logits.shape.rank else None
    return (static, static) if static is not None else (None, tf.shape(logits)[-1])


def _checked_ids(y, classes):
    """int32 ids [B] from ids [B] or [B, 1], after one cheap in-graph check (range, whole numbers)."""
    ids = tf.reshape(y, [-1])
    if ids.dtype.is_floating:
        whole = tf.reduce_all(tf.equal(ids, tf.round(ids)))
        ids_int = tf.cast(ids, tf.int64)
    else:
        whole = True
        ids_int = tf.cast(ids, tf.int64)
    valid = tf.logical_and(
        whole, tf.reduce_all((ids_int >= 0) & (ids_int < tf.cast(classes, tf.int64)))
    )
    check = tf.debugging.Assert(
        valid,
        [
            "Labels read as class ids must be whole numbers in [0, classes) (classes = the logits' last "
            "dimension:",
            classes,
            "). Map them to 0-based class indices, or pass one-hot / soft rows [N, classes]. Received ids:",
            ids,
        ],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        return tf.cast(tf.identity(ids_int), tf.int32)


def _check_width(y, classes):
    width = tf.shape(y)[-1]
    return tf.debugging.Assert(
        tf.equal(width, tf.cast(classes, tf.int32)),
        ["One-hot / soft label rows must have one column per class; rows of width", width, "for", classes,
         "classes. Pass rows of the logits' width, or integer class ids [N] or [N, 1]."],
    )


def _one_hot(y, classes, dtype):
    return tf.one_hot(_checked_ids(y, classes), classes, dtype=dtype)


def ids_tensor(y, logits):
    """int32 class ids [B] from labels in any accepted form, in-graph (usable inside `tf.function`).

    The form is decided from the static shape (at trace time): rank 1, or rank 2
    with a last dimension of 1, is ids; rank 2 with a last dimension equal to the
    logits' class count (> 1) is one-hot / soft rows (their argmax is taken).
    Rank 2 of statically unknown width is decided at run time (width 1: ids;
    else rows, asserted to match the logits' width). Ids are checked at run
    time, by one `tf.debugging.Assert` (XLA compiles it away), to be whole
    numbers in [0, classes).

    Args:
      y: labels [B], [B, 1] or [B, classes]: a tensor or array.
      logits: the model's logits [B, classes] (only their shape is read).

    Returns:
      An int32 tensor [B].

    Raises:
      ValueError: at trace time, for labels of unknown rank, rank 0 or > 2, or
        rows whose width differs from the logits' class count.
      tf.errors.InvalidArgumentError: at run time, for ids out of [0, classes),
        non-whole ids, or (unknown static width) rows of the wrong width.

    Example:
      >>> ids_tensor(tf.constant([[2], [0]]), tf.zeros([2, 3])).numpy()
      array([2, 0], dtype=int32)
    """
    y = tf.convert_to_tensor(y)
    if y.dtype == tf.bool:
        y = tf.cast(y, tf.int32)  # argmax takes numbers
    static, classes = _classes(logits)
    form = _form(y, static)
    if form == "ids":
        return _checked_ids(y, classes)
    if form == "rows":
        if static is None:
            with tf.control_dependencies([_check_width(y, classes)]):
                y = tf.identity(y)
        return tf.argmax(y, axis=-1, output_type=tf.int32)

    def rows():
        with tf.control_dependencies([_check_width(y, classes)]):
            return tf.argmax(y, axis=-1, output_type=tf.int32)

    return tf.cond(tf.equal(tf.shape(y)[-1], 1), lambda: _checked_ids(y, classes), rows)


def cross_entropy(y, logits):
    """Per-example cross-entropy from logits, for labels in any accepted form (in-graph).

    Ids ([B] or [B, 1]) are turned into one-hot rows and every form goes through
    the same softmax cross-entropy, so ids and the equivalent one-hot rows give
    bit-identical losses and gradients (hence identical attacks). The form is
    decided as in `ids_tensor` (static shape; a run-time choice for rank-2
    labels of unknown width).

    Args:
      y: labels [B], [B, 1] or [B, classes].
      logits: logits [B, classes].

    Returns:
      A [B] tensor of the logits' dtype.

    Raises:
      ValueError: at trace time, as `ids_tensor`.
      tf.errors.InvalidArgumentError: at run time, as `ids_tensor`.

    Example:
      >>> cross_entropy(tf.constant([1]), tf.constant([[0.0, 2.0]])).numpy()  # log(1 + e^-2)
      array([0.12692805], dtype=float32)
    """
    y = tf.convert_to_tensor(y)
    logits = tf.convert_to_tensor(logits)
    static, classes = _classes(logits)
    form = _form(y, static)

    if form == "ids":
        rows = _one_hot(y, classes, logits.dtype)
    elif form == "rows":
        rows = tf.cast(y, logits.dtype)
        if static is None:
            with tf.control_dependencies([_check_width(y, classes)]):
                rows = tf.identity(rows)
    else:

        def checked_rows():
            with tf.control_dependencies([_check_width(y, classes)]):
                return tf.cast(y, logits.dtype)

        rows = tf.cond(tf.equal(tf.shape(y)[-1], 1), lambda: _one_hot(y, classes, logits.dtype), checked_rows)
    return tf.nn.softmax_cross_entropy_with_logits(rows, logits)
