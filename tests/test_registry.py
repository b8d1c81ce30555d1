"""The swap table: what convert may replace, and the options each method takes."""

import pytest

from keras_smart import config
from keras_smart import registry
from tests.models import keras


@pytest.mark.parametrize("method", list(config.Method))
def test_every_conditional_class_replaces_its_source_class(method):
    for source, conditional in registry.SWAPS[method].items():
        assert conditional.source_class is source
        assert issubclass(conditional, source)


def test_accepted_options_per_method():
    assert registry.accepted_options(config.Method.SMART) == ["noise_init", "seed", "tradeoff_mode"]
    assert registry.accepted_options(config.Method.FLOATS) == ["noise_init", "seed"]
    assert "film_encoding" in registry.accepted_options(config.Method.OAT)


def test_fixed_options_cannot_be_set_by_the_user():
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['masked'\]"):
        registry.check_options(config.Method.FLOATS, {"masked": False})


def test_custom_objects_cover_plain_and_registered_names():
    objects = registry.custom_objects()
    for cls in registry.CONDITIONAL_CLASSES:
        assert objects[cls.__name__] is cls
        assert objects[f"keras_smart>{cls.__name__}"] is cls
    assert keras.layers.Dense not in objects.values()
