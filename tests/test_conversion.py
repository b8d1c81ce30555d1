"""convert / strip / set_tradeoff / get_tradeoff on every graph shape and method."""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import layers as cl
from tests import models
from tests.models import keras

APPLICATIONS = ("MobileNetV2", "ResNet50V2", "EfficientNetB0", "DenseNet121")
# SMART on every application; each other method on one application, so that every method meets a
# real keras.applications graph (the conversion machinery is shared: the methods differ only in the
# layer classes they swap, which tests/layers checks one by one). Suite time: each case costs 6-18 s.
_OTHER_METHODS = {"ResNet50V2": "float", "EfficientNetB0": "floats", "MobileNetV2": "oat"}
_CASES = [(name, "smart") for name in APPLICATIONS] + sorted(_OTHER_METHODS.items())


@pytest.mark.parametrize("method", models.METHODS)
@pytest.mark.parametrize("builder", sorted(models.MODEL_BUILDERS))
def test_converted_model_at_clean_tradeoff_equals_original(builder, method):
    model = models.MODEL_BUILDERS[builder]()
    x = models.inputs_for(model)
    smart = keras_smart.convert(model, method=method)
    assert isinstance(smart, keras_smart.SmartModel)
    assert keras_smart.get_tradeoff(smart) == 0.0
    assert models.max_abs_diff(smart(x), model(x)) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name, method", _CASES)
def test_keras_applications_convert_exactly(name, method):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    x = models.inputs_for(model, batch=2)
    smart = keras_smart.convert(model, method=method)
    assert models.max_abs_diff(smart(x), model(x)) <= 1e-5
    conditional = smart.conditional_layers()
    assert conditional, "nothing was converted"
    plain = keras_smart.strip(smart, tradeoff=0.0)
    assert [l.name for l in plain.layers] == [l.name for l in model.layers]
    assert models.max_abs_diff(plain(x), model(x)) <= 1e-5


def test_convert_swaps_the_registry_classes_and_keeps_names():
    model = models.conv_block_model()
    smart = keras_smart.convert(model, "smart")
    kinds = {l.name: type(l).__name__ for l in smart.layers}
    assert kinds["conv"] == "DualMaskConv2D"
    assert kinds["dw"] == "DualMaskDepthwiseConv2D"
    assert kinds["sep"] == "DualMaskSeparableConv2D"
    assert kinds["logits"] == "DualMaskDense"
    assert kinds["bn"] == "DualBatchNormalization"
    assert kinds["relu"] == "ReLU"
    assert [l.name for l in smart.layers] == [l.name for l in model.layers]


def test_oat_swaps_only_batch_norm():
    smart = keras_smart.convert(models.conv_block_model(), "oat")
    kinds = {l.name: type(l).__name__ for l in smart.layers}
    assert kinds["bn"] == "FiLMDualBatchNormalization"
    assert kinds["conv"] == "Conv2D"


def test_convert_does_not_mutate_the_model():
    model = models.conv_block_model()
    before = [w.copy() for w in model.get_weights()]
    layers_before = [type(l) for l in model.layers]
    smart = keras_smart.convert(model, "smart")
    keras_smart.design_masks(smart, score="random", density=0.5, seed=1)
    keras_smart.set_tradeoff(smart, 1.0)
    assert [type(l) for l in model.layers] == layers_before
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not set(map(id, smart.layers[1:])) & set(map(id, model.layers))


@pytest.mark.parametrize("method", models.METHODS)
def test_strip_equals_smart_model_at_both_ends(method):
    smart = keras_smart.convert(models.conv_block_model(), method=method, seed=3)
    models.randomize_conditional_state(smart, seed=1)
    x = models.inputs_for(smart)
    outputs = {}
    for t in (0.0, 1.0):
        keras_smart.set_tradeoff(smart, t)
        with cl.expected_noise():
            outputs[t] = smart(x).numpy()
        plain = keras_smart.strip(smart, tradeoff=t)
        assert not any(isinstance(l, cl.ConditionalLayer) for l in plain.layers)
        assert models.max_abs_diff(plain(x), outputs[t]) <= 1e-5
    assert models.max_abs_diff(outputs[0.0], outputs[1.0]) > 1e-3, "the two paths should differ"


@pytest.mark.parametrize("method", sorted(models.CONTINUOUS))
def test_strip_equals_smart_model_at_intermediate_tradeoffs(method):
    smart = keras_smart.convert(models.conv_block_model(), method=method, **models.CONTINUOUS[method])
    models.randomize_conditional_state(smart, seed=2)
    x = models.inputs_for(smart)
    for t in (0.2, 0.5):
        keras_smart.set_tradeoff(smart, t)
        with cl.expected_noise():
            expected = smart(x).numpy()
        assert models.max_abs_diff(keras_smart.strip(smart)(x), expected) <= 1e-5


def test_strip_uses_the_current_tradeoff_by_default():
    smart = keras_smart.convert(models.conv_block_model(), "smart")
    models.randomize_conditional_state(smart)
    keras_smart.set_tradeoff(smart, 1.0)
    x = models.inputs_for(smart)
    assert models.max_abs_diff(keras_smart.strip(smart)(x), smart(x)) <= 1e-5


def test_blend_mode_moves_continuously_between_the_paths():
    smart = keras_smart.convert(models.conv_block_model(), "smart", tradeoff_mode="blend")
    models.randomize_conditional_state(smart)
    x = models.inputs_for(smart)
    outs = []
    for t in (0.0, 0.5, 1.0):
        keras_smart.set_tradeoff(smart, t)
        outs.append(smart(x).numpy())
    assert models.max_abs_diff(outs[0], outs[1]) > 1e-4
    assert models.max_abs_diff(outs[1], outs[2]) > 1e-4


def test_noise_is_random_only_off_the_clean_tradeoff():
    smart = keras_smart.convert(models.conv_block_model(), "float", seed=0)
    x = models.inputs_for(smart)
    np.testing.assert_array_equal(smart(x).numpy(), smart(x).numpy())
    keras_smart.set_tradeoff(smart, 1.0)
    assert models.max_abs_diff(smart(x), smart(x)) > 0.0
    with cl.expected_noise():
        np.testing.assert_array_equal(smart(x).numpy(), smart(x).numpy())


def test_set_tradeoff_does_not_retrace():
    smart = keras_smart.convert(models.conv_block_model(), "smart")
    models.randomize_conditional_state(smart)
    x = tf.constant(models.inputs_for(smart))
    predict = tf.function(lambda inputs: smart(inputs, training=False))
    clean = predict(x).numpy()
    keras_smart.set_tradeoff(smart, 1.0)
    adversarial = predict(x).numpy()
    keras_smart.set_tradeoff(smart, 0.0)
    np.testing.assert_allclose(predict(x).numpy(), clean, atol=1e-6)
    assert predict.experimental_get_tracing_count() == 1
    assert models.max_abs_diff(clean, adversarial) > 1e-3


def test_get_tradeoff_reads_what_set_tradeoff_wrote():
    smart = keras_smart.convert(models.sequential_model())
    keras_smart.set_tradeoff(smart, np.float32(0.25))
    assert keras_smart.get_tradeoff(smart) == pytest.approx(0.25)
    keras_smart.set_tradeoff(smart, 1)
    assert keras_smart.get_tradeoff(smart) == 1.0


@pytest.mark.parametrize("method", models.METHODS)
def test_keras_file_round_trip_keeps_outputs_and_tradeoff(method, tmp_path):
    smart = keras_smart.convert(models.nested_model() if method == "smart" else models.conv_block_model(), method)
    models.randomize_conditional_state(smart)
    keras_smart.set_tradeoff(smart, 0.4)
    x = models.inputs_for(smart)
    with cl.expected_noise():
        expected = smart(x).numpy()
    path = str(tmp_path / "model.keras")
    smart.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects
    assert isinstance(loaded, keras_smart.SmartModel)
    assert keras_smart.get_tradeoff(loaded) == pytest.approx(0.4)
    with cl.expected_noise():
        assert models.max_abs_diff(loaded(x), expected) <= 1e-6
    keras_smart.set_tradeoff(loaded, 0.0)  # still bound to its own variable
    keras_smart.set_tradeoff(smart, 0.0)
    with cl.expected_noise():
        assert models.max_abs_diff(loaded(x), smart(x)) <= 1e-6


def test_clone_model_keeps_class_outputs_and_tradeoff():
    smart = keras_smart.convert(models.conv_block_model(), "smart")
    models.randomize_conditional_state(smart)
    keras_smart.set_tradeoff(smart, 1.0)
    clone = keras.models.clone_model(smart)
    assert isinstance(clone, keras_smart.SmartModel)
    clone.set_weights(smart.get_weights())
    assert keras_smart.get_tradeoff(clone) == 1.0
    x = models.inputs_for(smart)
    assert models.max_abs_diff(clone(x), smart(x)) <= 1e-6
    keras_smart.set_tradeoff(clone, 0.0)  # independent variables
    assert keras_smart.get_tradeoff(smart) == 1.0


def test_converted_model_trains_with_fit():
    smart = keras_smart.convert(models.sequential_model(), "smart")
    smart.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = models.inputs_for(smart, batch=16)
    y = np.arange(16) % 3
    history = smart.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])


# --- bad input ---------------------------------------------------------------------------------------


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = keras.layers.Dense(2)

    def call(self, inputs):
        return self.fc(inputs)


def test_subclassed_model_is_rejected_with_a_way_forward():
    model = _Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed model.*Functional API"):
        keras_smart.convert(model)


def test_subclassed_model_nested_in_a_functional_one_is_named():
    inner = _Subclassed()
    inputs = keras.Input((3,))
    model = keras.Model(inputs, inner(inputs))
    with pytest.raises(TypeError, match=f"'{inner.name}'.*nested in"):
        keras_smart.convert(model)


@pytest.mark.parametrize("value", [None, "model", np.zeros(3)])
def test_non_model_input_is_rejected(value):
    with pytest.raises(TypeError, match="expects a keras.Model"):
        keras_smart.convert(value)


def test_a_layer_is_rejected_with_a_hint():
    with pytest.raises(TypeError, match="wrap it in a model"):
        keras_smart.convert(keras.layers.Dense(3))


def test_unknown_method_and_option_are_rejected():
    model = models.sequential_model()
    with pytest.raises(ValueError, match="Unknown `method`.*'smart'"):
        keras_smart.convert(model, method="magic")
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['film_encoding'\]"):
        keras_smart.convert(model, method="smart", film_encoding="scalar")
    with pytest.raises(ValueError, match="Unknown `tradeoff_mode`"):
        keras_smart.convert(model, method="smart", tradeoff_mode="mix")


def test_unbuilt_model_is_rejected():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        keras_smart.convert(model)


def test_already_converted_model_is_rejected():
    smart = keras_smart.convert(models.sequential_model())
    with pytest.raises(ValueError, match="already converted.*strip"):
        keras_smart.convert(smart)
    inputs = keras.Input((10, 10, 2))
    wrapper = keras.Model(inputs, smart(inputs))
    with pytest.raises(ValueError, match="already converted"):
        keras_smart.convert(wrapper)


@pytest.mark.parametrize(
    "lam, error, fragment",
    [
        (-0.1, ValueError, r"must be in \[0, 1\].*-0.1"),
        (1.5, ValueError, r"must be in \[0, 1\]"),
        (float("nan"), ValueError, r"must be in \[0, 1\].*nan"),
        ("0.5", TypeError, "must be a real number.*str"),
        (True, TypeError, "must be a real number.*bool"),
        (None, TypeError, "must be a real number"),
        (np.array([0.5]), TypeError, "must be a real number"),
    ],
)
def test_invalid_tradeoff_is_rejected_and_nothing_changes(lam, error, fragment):
    smart = keras_smart.convert(models.sequential_model())
    keras_smart.set_tradeoff(smart, 0.3)
    with pytest.raises(error, match=fragment):
        keras_smart.set_tradeoff(smart, lam)
    if lam is not None:  # strip(tradeoff=None) means "the current trade-off"
        with pytest.raises(error, match=fragment):
            keras_smart.strip(smart, tradeoff=lam)
    assert keras_smart.get_tradeoff(smart) == pytest.approx(0.3)


def test_tradeoff_functions_reject_plain_models():
    model = models.sequential_model()
    for fn in (keras_smart.get_tradeoff, keras_smart.strip):
        with pytest.raises(TypeError, match="expects a SmartModel"):
            fn(model)
    with pytest.raises(TypeError, match="Call keras_smart.convert"):
        keras_smart.set_tradeoff(model, 0.5)


def test_unsupported_layer_configuration_names_the_layer_and_skip():
    inputs = keras.Input((8, 8, 4))
    outputs = keras.layers.BatchNormalization(renorm=True, name="renormed")(inputs)
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"'renormed' uses .*skip=\['renormed'\]"):
        keras_smart.convert(model)
    with pytest.warns(keras_smart.UnconvertedLayersWarning, match=r"renormed \(BatchNormalization, 100.0%"):
        smart = keras_smart.convert(model, skip=["renormed"])
    assert type(smart.get_layer("renormed")) is keras.layers.BatchNormalization


def test_skip_keeps_named_layers_or_a_predicates_layers_plain():
    model = models.conv_block_model()
    x = models.inputs_for(model)
    with pytest.warns(keras_smart.UnconvertedLayersWarning) as record:
        by_name = keras_smart.convert(model, "smart", skip=["conv", "logits"])
    message = str(record[0].message)
    assert "conv (Conv2D" in message and "logits (Dense" in message and "fc1" not in message
    kinds = {l.name: type(l).__name__ for l in by_name.layers}
    assert kinds["conv"] == "Conv2D" and kinds["logits"] == "Dense" and kinds["fc1"] == "DualMaskDense"
    with pytest.warns(keras_smart.UnconvertedLayersWarning):
        by_predicate = keras_smart.convert(model, "smart", skip=lambda l: isinstance(l, keras.layers.Dense))
    assert {type(l).__name__ for l in by_predicate.layers if l.name in ("fc1", "logits")} == {"Dense"}
    for smart in (by_name, by_predicate):
        assert models.max_abs_diff(smart(x), model(x)) <= 1e-5
    counts = keras_smart.count_nonzero(by_name)
    assert counts.unconverted_layers == {"conv": 8 * 27 + 8, "logits": 16 * 4 + 4}
    assert counts.unconverted == sum(counts.unconverted_layers.values())
    assert counts.layers["conv"]["clean"] == counts.layers["conv"]["adv"] == 8 * 27  # plain: same on both paths


def test_skip_with_a_nested_models_name_keeps_all_of_it_plain():
    with pytest.warns(keras_smart.UnconvertedLayersWarning, match="inner_fc"):
        smart = keras_smart.convert(models.nested_model(), "smart", skip=["inner_seq"])
    inner = smart.get_layer("inner_seq")
    assert [type(l).__name__ for l in inner.layers] == ["Dense", "BatchNormalization"]
    assert type(smart.get_layer("head")).__name__ == "DualMaskDense"


@pytest.mark.parametrize(
    "skip, error, match",
    [
        (["nope"], ValueError, r"`skip` names no layer of model 'functional': \['nope'\]. Its layers: "),
        ([3], TypeError, "list of layer names or a predicate"),
    ],
)
def test_skip_rejects_what_names_no_layer(skip, error, match):
    with pytest.raises(error, match=match):
        keras_smart.convert(models.conv_block_model(), skip=skip)


def test_no_warning_when_everything_with_weights_is_converted(recwarn):
    keras_smart.convert(models.conv_block_model(), "smart")
    keras_smart.convert(models.conv_block_model(), "oat")  # OAT shares its kernels by design
    assert not [w for w in recwarn if issubclass(w.category, keras_smart.UnconvertedLayersWarning)]


def test_layers_without_a_conditional_version_are_listed_with_their_share():
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 4, name="embed")(inputs)
    x = keras.layers.LSTM(5, name="lstm")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    total = model.count_params()
    share = 100.0 * model.get_layer("lstm").count_params() / total
    with pytest.warns(keras_smart.UnconvertedLayersWarning, match=rf"lstm \(LSTM, {share:.1f}% of the weights\)"):
        smart = keras_smart.convert(model, "smart")
    counts = keras_smart.count_nonzero(smart)
    assert counts.unconverted == total - model.get_layer("logits").count_params()
    assert counts.total == 5 * 2  # the converted Dense kernel


def test_a_model_of_the_other_keras_flavour_is_named_as_such():
    if _compat.IS_LEGACY:
        import keras as other  # pylint: disable=g-import-not-at-top
        got, active = "Keras 3", "tf_keras"
    else:
        other = pytest.importorskip("tf_keras")
        got, active = "tf_keras", "Keras 3"
    inputs = other.Input((3,))
    model = other.Model(inputs, other.layers.Dense(2)(inputs))
    with pytest.raises(TypeError, match=rf"received a {got} model .* keras_smart runs {active} in this process"):
        keras_smart.convert(model)


def test_lambda_layers_are_cloned_around_their_live_function():
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: tf.nn.relu(t) * 2.0, name="double_relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    x_in = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    smart = keras_smart.convert(model, "smart")
    assert models.max_abs_diff(smart(x_in), model(x_in)) <= 1e-6
    assert models.max_abs_diff(keras_smart.strip(smart)(x_in), model(x_in)) <= 1e-6


def test_layers_convert_cannot_reach_are_reported():
    inputs = keras.Input((5, 4))
    outputs = keras.layers.TimeDistributed(keras.layers.Dense(3, name="td_fc"), name="td")(inputs)
    with pytest.warns(keras_smart.UnconvertedLayersWarning, match=r"td \(TimeDistributed"):
        smart = keras_smart.convert(keras.Model(inputs, outputs))
    x = np.random.rand(2, 5, 4).astype("float32")
    assert smart(x).shape == (2, 5, 3)
