"""What users pass as data, made uniform: (x, y) batches, in-memory arrays, and the input/output checks.

Every module that takes user data (evaluation, export, mask design,
recalibration, the CLI) reads it through these functions, so every one accepts
the same forms and answers bad input with the same errors.
"""

import numpy as np
import tensorflow as tf


def take_batches(data, batch_size, max_batches, purpose):
    """Up to `max_batches` (x, y) tensor batches from (x, y) arrays or a tf.data.Dataset of batches.

    Dataset elements may carry a third item (sample weights); it is dropped.

    Args:
      data: an (x, y) pair of arrays, or a tf.data.Dataset of (x, y[, w]) batches.
      batch_size: rows per batch when `data` holds arrays.
      max_batches: the most batches returned.
      purpose: what the batches are for, e.g. "mask design" (named in errors).

    Returns:
      A list of (x, y) tensor pairs.

    Raises:
      TypeError: `data` is neither.
      ValueError: x and y differ in length, or there is no batch.

    Example:
      >>> x, y = np.zeros((300, 4), "float32"), np.arange(300) % 3
      >>> [tuple(xb.shape) for xb, _ in take_batches((x, y), 128, 8, "batch-norm recalibration")]
      [(128, 4), (128, 4), (44, 4)]
    """
    if isinstance(data, tf.data.Dataset):
        batches = [(element[0], element[1]) for element in data.take(max_batches)]
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(a) for a in data)
        if len(x) != len(y):
            raise ValueError(f"`data` x and y differ in length: {len(x)} vs {len(y)}.")
        batches = [
            (tf.constant(x[i : i + batch_size]), tf.constant(y[i : i + batch_size]))
            for i in range(0, min(len(x), batch_size * max_batches), batch_size)
        ]
    else:
        raise TypeError(
            "`data` must be an (x, y) pair of arrays or a tf.data.Dataset of (x, y) batches. "
            f"Received: {type(data).__name__}"
        )
    if not batches:
        raise ValueError(f"`data` is empty: {purpose} needs at least one batch.")
    return batches


def to_arrays(data, *, labels=True, max_examples=None, input_shape=None, arg_name="data"):
    """Up to `max_examples` examples of `data` in memory: x as float32 (and the labels as given).

    Args:
      data: with `labels`, an (x, y) pair of arrays or a tf.data.Dataset of
        (x, y[, w]) batches; without, an array of inputs or a tf.data.Dataset of
        input batches (or of (x, y) batches, whose labels are dropped). A
        dataset of single examples (one rank below `input_shape`) is batched.
      labels: whether `data` carries labels (and the result too).
      max_examples: the most examples read (None: all).
      input_shape: the model's input shape, batch axis included (None axes
        match anything); inputs of another shape are refused.
      arg_name: the argument's name in error messages.

    Returns:
      `(x, y)` with `labels`, else `x`; x is a C-contiguous float32 array.

    Raises:
      TypeError: `data` is none of the accepted forms.
      ValueError: no example, x and y differ in length, or x has the wrong shape.

    Example:
      >>> x, y = to_arrays((np.zeros((5, 2)), np.arange(5)), max_examples=3)
      >>> x.shape, x.dtype, y.tolist()
      ((3, 2), dtype('float32'), [0, 1, 2])
    """
    if isinstance(data, tf.data.Dataset):
        x, y = _dataset_arrays(data, labels, max_examples, input_shape, arg_name)
    elif labels and isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
    elif not labels and not isinstance(data, (str, bytes, dict)):
        x, y = _as_float_array(data, arg_name), None
    else:
        expected = "an (x, y) pair of arrays or a tf.data.Dataset of (x, y) batches" if labels else (
            "an array of inputs (N, ...) or a tf.data.Dataset of input batches")
        length = f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""
        raise TypeError(f"`{arg_name}` must be {expected}. Received: {type(data).__name__}{length}")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"`{arg_name}` is empty: received x of shape {x.shape}. Pass at least one example.")
    if y is not None and len(y) != len(x):
        raise ValueError(f"`{arg_name}` has {len(x)} inputs but {len(y)} labels.")
    if max_examples is not None:
        x = x[:max_examples]
        y = None if y is None else y[:max_examples]
    if input_shape is not None:
        expected = tuple(input_shape[1:])
        if x.ndim - 1 != len(expected) or any(e is not None and e != a for e, a in zip(expected, x.shape[1:])):
            raise ValueError(f"The model expects inputs of shape {(None, *expected)}; `{arg_name}` holds {x.shape}.")
    x = np.ascontiguousarray(x, dtype=np.float32)
    return (x, y) if labels else x


def _dataset_arrays(data, labels, max_examples, input_shape, arg_name):
    spec = data.element_spec
    paired = isinstance(spec, tuple) and len(spec) in (2, 3)
    if labels and not paired:
        raise TypeError(
            f"A tf.data.Dataset passed as `{arg_name}` must yield (x, y) pairs (batches or single examples). "
            f"Received elements: {spec}"
        )
    x_spec = spec[0] if paired else spec
    if input_shape is not None and x_spec.shape.rank == len(input_shape) - 1:
        data = data.batch(256)  # single examples
    xs, ys, count = [], [], 0
    for element in data:
        xs.append(np.asarray(element[0] if paired else element))
        if labels:
            ys.append(np.asarray(element[1]))
        count += len(xs[-1])
        if max_examples is not None and count >= max_examples:
            break
    if not xs:
        raise ValueError(f"`{arg_name}` is empty: the dataset yielded no batches. Pass at least one example.")
    return np.concatenate(xs), (np.concatenate(ys) if labels else None)


def _as_float_array(data, arg_name):
    try:
        return np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{arg_name}` must be an array of inputs (N, ...) or a tf.data.Dataset of input batches. "
            f"Received: {type(data).__name__}"
        ) from None


def _io(model):
    """(inputs, outputs) of `model`, each None when unknown (a subclassed model never called)."""
    found = []
    for kind in ("inputs", "outputs"):
        try:
            found.append(getattr(model, kind))
        except (AttributeError, ValueError):
            found.append(None)
    return found


def check_single_io(model, caller):
    """Raises ValueError unless `model` has one input and one output (the logits).

    `caller` names what needs it, e.g. "`evaluate_tradeoff`". A subclassed model
    that was never called has no known inputs and passes.
    """
    counts = [None if tensors is None else len(tensors) for tensors in _io(model)]
    if any(n is not None and n != 1 for n in counts):
        raise ValueError(
            f"{caller} needs a model with one input and one output (the logits); '{model.name}' has "
            f"{counts[0]} input(s) and {counts[1]} output(s). Wrap the classifier in a single-input, "
            "single-output keras.Model."
        )


def check_exits_io(model, caller):
    """Raises ValueError unless `model` has one input and one output, or several outputs of one shape.

    Several outputs of one shape are a multi-exit model's exits (logits over
    the same classes). A subclassed model that was never called passes.

    Returns:
      The number of outputs (1 when unknown).

    Example:
      >>> inputs = keras.Input((4,))
      >>> check_exits_io(keras.Model(inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(3)(inputs)]), "Training")
      2
    """
    inputs, outputs = _io(model)
    shapes = [tuple(t.shape) for t in outputs or ()]
    count = None if inputs is None else len(inputs)
    if count not in (None, 1) or len(set(shapes)) > 1:
        raise ValueError(
            f"{caller} needs a model with one input and one output (the logits), or several outputs of one shape "
            f"(the exits' logits of a multi-exit model); '{model.name}' has {count} input(s) and "
            f"{len(shapes)} output(s) of shapes {shapes}. Wrap the classifier in a single-input keras.Model whose "
            "outputs are logits over the same classes."
        )
    return max(len(shapes), 1)
