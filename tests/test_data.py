"""The embedded digits: shapes, range, a reproducible stratified split, clear errors."""

import numpy as np
import pytest
import tensorflow as tf

from keras_smart import data


def test_digits_shapes_range_and_split():
    x_train, y_train = data.digits("train")
    x_test, y_test = data.digits("test")
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert np.bincount(y_test).tolist() == [100] * 10
    np.testing.assert_array_equal(data.digits("test")[1], y_test)  # reproducible
    assert not np.array_equal(data.digits("test", seed=1)[1], y_test)
    train_rows = {row.tobytes() for row in x_train.reshape(4000, -1)}
    assert not any(row.tobytes() in train_rows for row in x_test.reshape(1000, -1)[:200])


def test_load_gives_batched_datasets():
    images, labels = next(iter(data.load("digits", "test", batch_size=32)))
    assert images.shape == (32, 28, 28, 1) and labels.shape == (32,)


@pytest.mark.parametrize("kwargs, fragment", [({"split": "val"}, "`split` must be"), ({"test_fraction": 1.0}, "test_fraction")])
def test_bad_arguments_are_rejected(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        data.digits(**kwargs)


def test_unknown_data_set_is_rejected():
    with pytest.raises(ValueError, match="Unknown data set 'imagenet'.*digits.*cifar10"):
        data.load("imagenet", "train")


def test_a_tfds_set_that_is_not_prepared_fails_at_once_with_instructions(tmp_path):
    with pytest.raises(data.DataNotAvailableError, match=r"(?s)'cifar10' is not prepared under .*data_dir=DIR.*download=True"):
        data.load("cifar10", "train", data_dir=str(tmp_path))
    assert not any(tmp_path.iterdir()), "a failed load must not leave files behind"


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)), ("svhn_cropped", (32, 32, 3))])
def test_tfds_sets_load_as_float_images_and_int_labels(name, shape):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=16):  # tfds' own offline stand-in for the download
        images, labels = next(iter(data.load(name, "train", download=True, batch_size=8, augment=True)))
    assert images.shape == (8, *shape) and images.dtype == tf.float32 and labels.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0


def test_augmentation_pads_crops_and_flips_without_changing_shapes():
    x, _ = data.digits("test")
    flipped = next(iter(data.load("digits", "test", augment="flip", max_examples=64, batch_size=64)))[0].numpy()
    same = [np.array_equal(a, b) for a, b in zip(flipped, x[:64])]
    mirrored = [np.array_equal(a, b[:, ::-1]) for a, b in zip(flipped, x[:64])]
    assert all(s or m for s, m in zip(same, mirrored)) and 0 < sum(mirrored) < 64
    cropped = next(iter(data.load("digits", "test", augment="pad_crop", max_examples=64, batch_size=64)))[0].numpy()
    assert cropped.shape == (64, 28, 28, 1)
    assert sum(not np.array_equal(a, b) for a, b in zip(cropped, x[:64])) > 32
    with pytest.raises(ValueError, match="`augment` must be"):
        data.load("digits", "test", augment="rotate")


def test_info_gives_shapes_and_class_names_without_data():
    assert data.info("digits") == ((28, 28, 1), [str(d) for d in range(10)])
    pytest.importorskip("tensorflow_datasets")
    shape, names = data.info("cifar10")
    assert shape == (32, 32, 3) and len(names) == 10
    assert len(data.info("cifar100")[1]) == 100
    with pytest.raises(ValueError, match="Unknown data set"):
        data.info("imagenet")
