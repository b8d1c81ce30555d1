"""to_tflite's settings: each is checked before any work, with errors that name the argument."""

import pytest

import keras_smart
from keras_smart import export
from keras_smart.export import options as options_lib
from tests import models
from tests.export import common
from tests.models import keras

_DEFAULTS = {
    "tradeoff": None,
    "runtime_tradeoff": False,
    "quantize": None,
    "representative_data": None,
    "check_tradeoffs": (0.0, 0.5, 1.0),
    "atol": 1e-4,
    "min_agreement": 0.98,
    "int8_io": False,
    "max_samples": 500,
}


def _options(model, **settings):
    return options_lib.check_options(model, **{**_DEFAULTS, **settings})


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"tradeoff": 1.5}, ValueError, "must be in \\[0, 1\\].*tradeoff=1.5"),
        ({"tradeoff": -0.1}, ValueError, "must be in \\[0, 1\\]"),
        ({"tradeoff": "1"}, TypeError, "real number"),
        ({"quantize": "int8"}, ValueError, "needs `representative_data`"),
        ({"tradeoff": 0.5, "runtime_tradeoff": True}, ValueError, "not both"),
        ({"runtime_tradeoff": "yes"}, TypeError, "`runtime_tradeoff` must be True or False"),
        ({"quantize": "int4"}, ValueError, "Unknown `quantize`"),
        ({"int8_io": True}, ValueError, "needs quantize='int8'"),
        ({"int8_io": 1}, TypeError, "`int8_io` must be True or False"),
        ({"atol": 0}, ValueError, "`atol` must be > 0"),
        ({"atol": "1e-4"}, TypeError, "`atol` must be a real number"),
        ({"min_agreement": 1.5}, ValueError, "`min_agreement` must be in \\[0, 1\\]"),
        ({"max_samples": 0}, ValueError, "`max_samples` must be an int >= 1"),
        ({"max_samples": True}, TypeError, "`max_samples` must be an int"),
        ({"runtime_tradeoff": True, "check_tradeoffs": (0.0, 2.0)}, ValueError, "`check_tradeoffs\\[i\\]`"),
        ({"runtime_tradeoff": True, "check_tradeoffs": ()}, ValueError, "`check_tradeoffs` is empty"),
    ],
)
def test_bad_arguments_fail_clearly_before_writing(kwargs, error, match, tmp_path):
    smart = common.converted("smart")
    with pytest.raises(error, match=match):
        export.to_tflite(smart, tmp_path / "bad.tflite", **kwargs)
    assert common.files(tmp_path) == []


def test_plain_models_have_no_tradeoff_and_missing_directories_are_reported(tmp_path):
    plain = models.conv_block_model()
    with pytest.raises(ValueError, match="plain Keras model"):
        export.to_tflite(plain, tmp_path / "p.tflite", tradeoff=0.0)
    with pytest.raises(ValueError, match="plain Keras model"):
        export.to_tflite(plain, tmp_path / "p.tflite", runtime_tradeoff=True)
    with pytest.raises(ValueError, match="does not exist"):
        export.to_tflite(plain, tmp_path / "missing" / "p.tflite")
    with pytest.raises(ValueError, match="not a directory"):
        export.to_tflite(plain, tmp_path)
    with pytest.raises(TypeError, match="Keras model"):
        export.to_tflite("model.keras", tmp_path / "p.tflite")
    result = export.to_tflite(plain, tmp_path / "p.tflite")
    x = models.inputs_for(plain, batch=4, seed=9)
    assert models.max_abs_diff(common.run_file(result.path, x), plain(x)) <= 1e-4


def test_a_model_with_two_outputs_is_refused():
    inputs = keras.Input((4,))
    two = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(3)(inputs)])
    with pytest.raises(ValueError, match="`to_tflite` needs a model with one input and one output"):
        _options(two)


def test_the_baked_tradeoff_defaults_to_the_models_and_check_tradeoffs_apply_to_runtime_files():
    smart = common.converted("smart")
    keras_smart.set_tradeoff(smart, 0.25)
    baked = _options(smart)
    assert baked.tradeoff == 0.25 and baked.check_tradeoffs == () and not baked.runtime_tradeoff
    runtime = _options(smart, runtime_tradeoff=True, check_tradeoffs=(1.0, 0.0, 1.0))
    assert runtime.tradeoff is None and runtime.check_tradeoffs == (0.0, 1.0)
    plain = _options(models.conv_block_model())
    assert plain.tradeoff is None and not plain.smart


class PruneLowMagnitude(keras.layers.Layer):
    """Named like TF-MOT's pruning wrapper (export recognises TF-MOT's wrappers by class name)."""

    def call(self, inputs):
        return inputs


class QuantizeWrapperV2(PruneLowMagnitude):
    """Named like TF-MOT's quantization-aware wrapper."""


def _wrapped_by(layer_class):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3)(layer_class()(inputs)))


def test_tfmot_wrapped_models_need_stripping_or_int8():
    with pytest.raises(ValueError, match=r"pruning wrappers \['PruneLowMagnitude'\].*strip_pruning"):
        _options(_wrapped_by(PruneLowMagnitude))
    quantization_aware = _wrapped_by(QuantizeWrapperV2)
    with pytest.raises(ValueError, match="quantization-aware trained.*Pass quantize='int8'"):
        _options(quantization_aware, quantize="dynamic")
    options = _options(quantization_aware, quantize="int8")  # its ranges are learned: no representative data
    assert options.quantization_aware and options.quantize == "int8"
