"""SmartModel owns one non-trainable trade-off variable that its conditional layers read."""

import keras_smart
from keras_smart import _compat
from tests import models


def test_tradeoff_is_one_non_trainable_model_weight():
    smart = keras_smart.convert(models.nested_model(), "smart")
    names = [_compat.weight_name(w) for w in smart.non_trainable_weights]
    assert names.count("tradeoff") == 1
    assert "tradeoff" not in [_compat.weight_name(w) for w in smart.trainable_weights]


def test_every_conditional_layer_reads_the_same_variable_including_nested_ones():
    smart = keras_smart.convert(models.nested_model(), "smart")
    layers = smart.conditional_layers()
    assert {l.name for l in layers} >= {"inner_fc", "inner_bn", "block_fc", "head"}
    keras_smart.set_tradeoff(smart, 0.6)
    assert {round(float(l.current_tradeoff()), 6) for l in layers} == {0.6}
