"""Every docstring `Example:` in the package runs: a doctest pass over each module.

The examples share a few names, defined once here, so that each reads as a
user's session: `keras_smart`, `keras` (the active flavour), `np`, `tf`, a
small digits classifier `cnn` (conv -> batch-norm -> pool -> dense, 10
logits), `smart = keras_smart.convert(cnn, "smart")`, and 64 embedded digits
`x` (float32, [64, 28, 28, 1]) with their labels `y` (int32, [64]).
"""

import doctest
import importlib
import pathlib
import pkgutil

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import data

keras = keras_smart.keras

_PACKAGE = pathlib.Path(keras_smart.__file__).parent


def _modules():
    names = ["keras_smart"]
    for info in pkgutil.walk_packages([str(_PACKAGE)], prefix="keras_smart."):
        names.append(info.name)
    return sorted(names)


def _cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="cnn",
    )


def _globs():
    x, y = data.digits("test")
    cnn = _cnn()
    return {
        "keras_smart": keras_smart,
        "keras": keras,
        "np": np,
        "tf": tf,
        "cnn": cnn,
        "smart": keras_smart.convert(cnn, "smart"),
        "x": x[:64],
        "y": y[:64],
    }


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, module_name) if t.examples]
    if not tests:
        pytest.skip(f"{module_name} has no docstring examples")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    shared = _globs()
    for test in tests:
        test.globs = {**test.globs, **shared}
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} docstring examples in {module_name} failed (see the output above)"
