"""Test set-up shared by every test: quiet TensorFlow, fixed seeds, a fresh Keras session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from keras_smart import _compat  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    _compat.keras.utils.set_random_seed(0)
    yield
    if _compat.IS_LEGACY:
        _compat.keras.backend.clear_session()
    else:
        # Keras 3's clear_session also runs a full gc.collect(), ~2 s per test on this suite's heap
        # (60% of the Keras 3 run); Python's own collector still runs.
        _compat.keras.backend.clear_session(free_memory=False)
