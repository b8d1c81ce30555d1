"""Dual layer-norm: Keras's LayerNormalization in every configuration, with one affine pair per path."""

import numpy as np
import pytest

from keras_smart import _compat
from keras_smart import layers as cl
from tests import models
from tests.models import keras

_CONFIGS = {
    "last_axis": {},
    "two_axes": {"axis": [1, 2]},
    "middle_axis": {"axis": 1},
    "small_epsilon": {"epsilon": 1e-6},  # tf_keras's unfused kernel
    "no_center": {"center": False},
    "no_scale": {"scale": False},
}
if not _compat.IS_LEGACY:
    _CONFIGS["rms_scaling"] = {"rms_scaling": True}


def _source(config, seed=0):
    layer = keras.layers.LayerNormalization(name="ln", **config)
    x = np.random.default_rng(seed).normal(1.0, 2.0, (3, 4, 5, 6)).astype("float32")
    layer(x)
    rng = np.random.default_rng(seed + 1)
    layer.set_weights([rng.normal(1.0, 0.5, w.shape) for w in layer.get_weights()])
    return layer, x


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")  # Keras 3 deprecates it, still supported
@pytest.mark.parametrize("config", sorted(_CONFIGS))
def test_computes_what_keras_computes_and_folds_at_both_ends(config):
    source, x = _source(_CONFIGS[config])
    layer = cl.DualLayerNormalization.from_layer(source)
    np.testing.assert_allclose(layer(x), source(x), atol=1e-6)
    names = sorted(_compat.weight_name(w) for w in layer.weights)
    plain = sorted(_compat.weight_name(w) for w in source.weights)
    assert names == sorted(plain + ["adv_" + n for n in plain])
    models.randomize_conditional_state(keras.Sequential([layer]), seed=4)
    for lam in (0.0, 0.3, 1.0):
        with cl.tradeoff_override(lam):
            expected = layer(x).numpy()
        np.testing.assert_allclose(layer.to_layer(lam)(x), expected, atol=1e-5)


def test_routes_by_lam_to_the_adversarial_pair():
    source, x = _source({})
    layer = cl.DualLayerNormalization.from_layer(source)
    layer.adv_gamma.assign(2.0 * layer.gamma.numpy())
    layer.adv_beta.assign(layer.beta.numpy() + 1.0)
    adversarial = keras.layers.LayerNormalization(name="adv")
    adversarial.build(x.shape)
    adversarial.set_weights([layer.adv_gamma.numpy(), layer.adv_beta.numpy()])
    with cl.tradeoff_override(0.0):
        np.testing.assert_allclose(layer(x), source(x), atol=1e-6)
    for lam in (0.3, 1.0):
        with cl.tradeoff_override(lam):
            np.testing.assert_allclose(layer(x), adversarial(x), atol=1e-5)
    assert set(layer.folded_weights(1.0)) == {"gamma", "beta"}
    np.testing.assert_array_equal(layer.folded_weights(1.0)["beta"], layer.adv_beta.numpy())
    np.testing.assert_array_equal(layer.folded_weights(0.0)["beta"], layer.beta.numpy())


def test_mixed_precision_computes_in_float32_like_keras():
    source = keras.layers.LayerNormalization(dtype="mixed_float16", name="ln")
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float16")
    expected = source(x)
    layer = cl.DualLayerNormalization.from_layer(source)
    got = layer(x)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(expected, np.float32), atol=2e-3)
