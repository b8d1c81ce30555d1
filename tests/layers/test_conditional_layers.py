"""What every conditional layer must do, parametrized over the registry."""

import numpy as np
import pytest

import keras_smart
from keras_smart import _compat
from keras_smart import layers as cl
from tests import models
from tests.layers import cases
from tests.models import keras


def _in_model(layer, x):
    inputs = keras.Input(x.shape[1:])
    return keras_smart.SmartModel(inputs, cases.call(layer, inputs))


def _kernel_layers(layer):
    """The conditional kernels `layer` computes with: itself, or its projections (attention)."""
    if isinstance(layer, cl.ConditionalKernel):
        return [layer]
    return [l for l in getattr(layer, "projections", dict)().values() if isinstance(l, cl.ConditionalKernel)]


@pytest.mark.parametrize("cls", cases.CLASSES, ids=cases.IDS)
def test_from_layer_computes_what_the_plain_layer_computes(cls):
    source, x = cases.source_and_input(cls)
    layer = cls.from_layer(source)
    assert layer.name == source.name
    np.testing.assert_allclose(cases.call(layer, x), cases.call(source, x), atol=1e-5)


@pytest.mark.parametrize("cls", cases.CLASSES, ids=cases.IDS)
def test_from_layer_rejects_other_layer_types(cls):
    with pytest.raises(TypeError, match="expects a"):
        cls.from_layer(keras.layers.ReLU())


@pytest.mark.parametrize("cls", cases.CLASSES, ids=cases.IDS)
def test_weights_masks_are_non_trainable_and_shapes_match(cls):
    source, x = cases.source_and_input(cls)
    layer = cls.from_layer(source)
    assert cases.call(layer, x).shape == cases.call(source, x).shape
    trainable = {_compat.weight_name(w) for w in layer.trainable_weights}
    frozen = {_compat.weight_name(w) for w in layer.non_trainable_weights}
    source_names = {_compat.weight_name(w) for w in source.weights}
    assert source_names <= trainable | frozen
    assert not any(n.endswith("_mask") for n in trainable)
    kernels = _kernel_layers(layer)
    if kernels:  # the layer's own kernels, or its projections' (attention)
        expected_masks = {n for l in kernels for k in l.kernel_names for n in l.mask_names(k)}
        assert {n for n in frozen if n.endswith("_mask")} == expected_masks
        added = sum(len(l.conditional_weight_names()) for l in kernels)
        assert len(layer.weights) == len(source.weights) + added
        assert len({id(w) for w in layer.weights}) == len(layer.weights), "a weight is tracked twice"
    else:  # dual batch-norm: a second set of every batch-norm weight
        assert {"adv_" + n for n in source_names} <= trainable | frozen


@pytest.mark.parametrize("cls", cases.CLASSES, ids=cases.IDS)
def test_config_round_trip(cls):
    source, _ = cases.source_and_input(cls)
    layer = cls.from_layer(source)
    config = layer.get_config()
    assert cls.from_config(config).get_config() == config
    plain = layer.source_config()
    assert not set(cls.conditional_config_keys) & set(plain)
    assert type(layer.to_layer(0.0)) is cls.source_class


@pytest.mark.parametrize("tradeoff", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("cls", cases.CLASSES, ids=cases.IDS)
def test_to_layer_folds_the_layer_at_that_tradeoff(cls, tradeoff):
    source, x = cases.source_and_input(cls)
    layer = cls.from_layer(source)
    models.randomize_conditional_state(_in_model(layer, x), seed=3)
    with cl.tradeoff_override(tradeoff), cl.expected_noise():
        expected = cases.call(layer, x).numpy()
    plain = layer.to_layer(tradeoff)
    assert plain.name == layer.name
    np.testing.assert_allclose(cases.call(plain, x), expected, atol=1e-5)


@pytest.mark.parametrize("cls", cases.CLASSES, ids=cases.IDS)
def test_keras_file_and_clone_round_trip(cls, tmp_path):
    source, x = cases.source_and_input(cls)
    model = _in_model(cls.from_layer(source), x)
    models.randomize_conditional_state(model, seed=5)
    keras_smart.set_tradeoff(model, 1.0)
    with cl.expected_noise():
        expected = model(x).numpy()
    path = str(tmp_path / "layer.keras")
    model.save(path)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for other in (keras.models.load_model(path), clone):
        assert type(other.layers[-1]) is cls
        with cl.expected_noise():
            np.testing.assert_allclose(other(x), expected, atol=1e-6)


@pytest.mark.parametrize("cls", cases.CLASSES, ids=cases.IDS)
def test_a_layer_reads_its_models_tradeoff_and_an_unbound_one_reads_zero(cls):
    source, x = cases.source_and_input(cls)
    layer = cls.from_layer(source)
    model = _in_model(layer, x)
    models.randomize_conditional_state(model, seed=2)
    keras_smart.set_tradeoff(model, 1.0)
    unbound = cls.from_config(layer.get_config())
    unbound.build_from_config(layer.get_build_config())
    unbound.set_weights(layer.get_weights())
    with cl.expected_noise():
        np.testing.assert_allclose(cases.call(layer, x), cases.call(layer.to_layer(1.0), x), atol=1e-5)
        np.testing.assert_allclose(cases.call(unbound, x), cases.call(layer.to_layer(0.0), x), atol=1e-5)
