"""The embedded digits: shapes, range, a reproducible stratified split, clear errors."""

import numpy as np
import pytest

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
    with pytest.raises(ValueError, match="Unknown data set 'cifar10'.*digits"):
        data.load("cifar10", "train")
