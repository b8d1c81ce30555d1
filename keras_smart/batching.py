"""A few (x, y) batches from what users pass as data: arrays or a tf.data.Dataset."""

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
      >>> take_batches((x, y), 128, 8, "batch-norm recalibration")
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
