"""design_masks / set_masks / get_masks / count_nonzero."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import layers as cl
from tests import models
from tests.models import keras


def _smart(method="smart", **options):
    return keras_smart.convert(models.conv_block_model(), method=method, **options)


def test_random_masks_give_each_path_its_density_and_its_own_outputs():
    smart = _smart()
    masks = keras_smart.design_masks(smart, score="random", density=(0.5, 0.5), seed=0)
    assert set(masks) == {"conv", "dw", "sep", "fc1", "logits"}
    assert set(masks["sep"]) == {
        "depthwise_kernel_clean_mask",
        "depthwise_kernel_adv_mask",
        "pointwise_kernel_clean_mask",
        "pointwise_kernel_adv_mask",
    }
    for layer_masks in masks.values():
        for mask in layer_masks.values():
            assert abs(mask.sum() - 0.5 * mask.size) <= 1, "density off by more than one weight"
    assert not np.array_equal(masks["conv"]["kernel_clean_mask"], masks["conv"]["kernel_adv_mask"])
    x = models.inputs_for(smart)
    clean = smart(x).numpy()
    keras_smart.set_tradeoff(smart, 1.0)
    assert models.max_abs_diff(clean, smart(x)) > 1e-3


@pytest.mark.parametrize("density", [(0.3, 0.7), (0.05, 1.0)])
def test_each_path_gets_its_own_density(density):
    smart = _smart()
    keras_smart.design_masks(smart, score="random", density=density, seed=4)
    for name, layer_masks in keras_smart.get_masks(smart).items():
        for mask_name, mask in layer_masks.items():
            d = density[0] if "clean" in mask_name else density[1]
            expected = max(1, round(d * mask.size))
            assert abs(mask.sum() - expected) <= 1, (name, mask_name)


def test_magnitude_masks_keep_the_largest_weights_and_coincide_at_equal_density():
    smart = _smart()
    masks = keras_smart.design_masks(smart, score="magnitude", density=0.25)
    kernel = np.abs(smart.get_layer("conv").kernel.numpy())
    kept = kernel[masks["conv"]["kernel_clean_mask"] == 1]
    dropped = kernel[masks["conv"]["kernel_clean_mask"] == 0]
    assert kept.min() >= dropped.max()
    np.testing.assert_array_equal(masks["conv"]["kernel_clean_mask"], masks["conv"]["kernel_adv_mask"])


def test_random_masks_are_reproducible_from_the_seed():
    a = keras_smart.design_masks(_smart(), score="random", density=0.5, seed=7)
    b = keras_smart.design_masks(_smart(), score="random", density=0.5, seed=7)
    c = keras_smart.design_masks(_smart(), score="random", density=0.5, seed=8)
    np.testing.assert_array_equal(a["fc1"]["kernel_adv_mask"], b["fc1"]["kernel_adv_mask"])
    assert not np.array_equal(a["fc1"]["kernel_adv_mask"], c["fc1"]["kernel_adv_mask"])


@pytest.mark.parametrize("lam, mask_name", [(0.0, "kernel_clean_mask"), (1.0, "kernel_adv_mask")])
def test_masked_weights_get_zero_gradient_on_their_path(lam, mask_name):
    smart = _smart()
    masks = keras_smart.design_masks(smart, score="random", density=(0.4, 0.6), seed=0)
    keras_smart.set_tradeoff(smart, lam)
    x = tf.constant(models.inputs_for(smart, batch=4))
    layer = smart.get_layer("conv")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(smart(x, training=True)))
    grad = tape.gradient(loss, layer.kernel).numpy()
    mask = masks["conv"][mask_name]
    assert np.all(grad[mask == 0] == 0.0)
    assert np.count_nonzero(grad[mask == 1]) > 0.5 * mask.sum()  # kept weights do learn


def test_floats_has_one_mask_shared_by_both_paths():
    smart = _smart("floats")
    masks = keras_smart.design_masks(smart, score="magnitude", density=0.3)
    assert set(masks["conv"]) == {"kernel_mask"}
    counts = keras_smart.count_nonzero(smart)
    assert counts.clean == counts.adv == counts.union
    assert abs(counts.clean - 0.3 * counts.total) <= len(counts.layers) * 2
    with pytest.raises(ValueError, match="one mask.*one density"):
        keras_smart.design_masks(smart, density=(0.3, 0.5))


def test_set_masks_round_trips_get_masks():
    smart = _smart()
    designed = keras_smart.design_masks(smart, score="random", density=(0.2, 0.8), seed=1)
    other = _smart()
    keras_smart.set_masks(other, designed)
    for name, layer_masks in keras_smart.get_masks(other).items():
        for mask_name, mask in layer_masks.items():
            np.testing.assert_array_equal(mask, designed[name][mask_name])


def _assert_masks_unchanged(smart, before):
    for name, layer_masks in keras_smart.get_masks(smart).items():
        for mask_name, mask in layer_masks.items():
            np.testing.assert_array_equal(mask, before[name][mask_name])


@pytest.mark.parametrize(
    "masks, error, fragment",
    [
        ({"nope": {}}, ValueError, "No masked layer named 'nope'.*Masked layers"),
        ({"conv": {"kernel_mask": np.ones((3, 3, 3, 8))}}, ValueError, "has no mask 'kernel_mask'"),
        ({"conv": {"kernel_adv_mask": np.ones((3, 3, 3, 4))}}, ValueError, r"shape \(3, 3, 3, 8\).*\(3, 3, 3, 4\)"),
        ({"conv": {"kernel_adv_mask": np.full((3, 3, 3, 8), 0.5)}}, ValueError, "only 0 and 1"),
        ({"conv": np.ones(3)}, TypeError, "must map mask names"),
        ([("conv", {})], TypeError, "must map layer names"),
    ],
)
def test_bad_masks_are_rejected_and_nothing_changes(masks, error, fragment):
    smart = _smart()
    before = keras_smart.design_masks(smart, score="random", density=0.5, seed=0)
    # A valid entry comes first: it must not be applied when a later one is bad.
    good = {"fc1": {"kernel_clean_mask": np.zeros_like(before["fc1"]["kernel_clean_mask"])}}
    payload = {**good, **masks} if isinstance(masks, dict) else masks
    with pytest.raises(error, match=fragment):
        keras_smart.set_masks(smart, payload)
    _assert_masks_unchanged(smart, before)


@pytest.mark.parametrize("density", [0.0, -0.5, 1.5, float("nan"), (0.5,), (0.5, 2.0)])
def test_invalid_density_is_rejected(density):
    with pytest.raises(ValueError, match="density"):
        keras_smart.design_masks(_smart(), density=density)


def test_invalid_score_is_rejected():
    with pytest.raises(ValueError, match="Unknown `score`"):
        keras_smart.design_masks(_smart(), score="snap")


@pytest.mark.parametrize("method", ["float", "oat"])
def test_masks_need_a_masked_method(method):
    with pytest.raises(ValueError, match="method='smart' or method='floats'"):
        keras_smart.design_masks(_smart(method))


def test_count_nonzero_counts_paths_union_and_macs():
    smart = _smart()
    dense = keras_smart.count_nonzero(smart)
    assert dense.clean == dense.adv == dense.union == dense.total
    assert dense.macs_clean == dense.macs_adv == dense.macs_dense
    conv = smart.get_layer("conv")
    assert dense.layers["conv"]["macs_dense"] == 12 * 12 * conv.kernel.numpy().size
    keras_smart.design_masks(smart, score="random", density=(0.25, 0.5), seed=0)
    counts = keras_smart.count_nonzero(smart)
    assert counts.total == dense.total
    assert counts.clean < counts.adv < counts.union <= counts.total
    assert counts.union >= max(counts.clean, counts.adv)
    assert counts.macs_clean < counts.macs_adv < counts.macs_dense
    fc = smart.get_layer("fc1")
    masks = keras_smart.get_masks(smart)["fc1"]
    assert counts.layers["fc1"]["clean"] == np.count_nonzero(fc.kernel.numpy() * masks["kernel_clean_mask"])


def test_count_nonzero_reports_conditioning_weights():
    assert keras_smart.count_nonzero(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])).conditioning == 0
    assert keras_smart.count_nonzero(_smart("oat")).conditioning > keras_smart.count_nonzero(_smart("smart")).conditioning
    float_model = _smart("float")
    assert keras_smart.count_nonzero(float_model).conditioning >= len(
        [l for l in float_model.layers if isinstance(l, cl.ConditionalKernel)]
    )
