"""The public surface: an API change is a visible diff here."""

import keras_smart


def test_public_api_is_pinned():
    assert keras_smart.__all__ == [
        "AdversarialConfig",
        "AttackConfig",
        "KERAS_FLAVOUR",
        "MaskConfig",
        "Method",
        "NonzeroCount",
        "SmartModel",
        "TradeoffMode",
        "TradeoffReport",
        "UnconvertedLayersWarning",
        "__version__",
        "attacks",
        "backbones",
        "callbacks",
        "channel_plan",
        "convert",
        "count_nonzero",
        "data",
        "design_masks",
        "ensemble",
        "evaluate_tradeoff",
        "evaluation",
        "exits",
        "export",
        "get_masks",
        "get_tradeoff",
        "keras",
        "layers",
        "noise",
        "pruning",
        "quantization",
        "recalibrate_batchnorm",
        "set_masks",
        "set_tradeoff",
        "strip",
    ]
    for name in keras_smart.__all__:
        assert hasattr(keras_smart, name), name


def test_flavour_follows_the_environment():
    import os

    legacy = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")
    assert keras_smart.KERAS_FLAVOUR == ("tf_keras" if legacy else "keras3")
    assert keras_smart._compat.keras.__name__ == ("tf_keras" if legacy else "keras")  # pylint: disable=protected-access


def test_keras_alias_is_the_active_flavour():
    assert keras_smart.keras is keras_smart._compat.keras  # pylint: disable=protected-access
