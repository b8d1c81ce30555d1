"""channel_plan and design_masks(granularity="channel"): whole channels, kept consistent where they flow."""

import warnings

import numpy as np
import pytest

import keras_smart
from tests.models import keras


def _branchy_model():
    """conv_a -> dw (joins) -> conv_b + shortcut (an Add); conv_c -> Flatten -> Dense; conv_e -> pool -> Dense;
    the two dense heads are concatenated before the classifier."""
    inputs = keras.Input((28, 28, 1))
    a = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    a = keras.layers.ReLU(name="relu_a")(keras.layers.BatchNormalization(name="bn_a")(a))
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(a)
    d = keras.layers.ReLU(name="relu_dw")(keras.layers.BatchNormalization(name="bn_dw")(d))
    b = keras.layers.BatchNormalization(name="bn_b")(keras.layers.Conv2D(6, 1, name="conv_b")(d))
    r = keras.layers.Add(name="add")([b, keras.layers.Conv2D(6, 1, name="shortcut")(a)])
    c = keras.layers.Conv2D(4, 3, strides=4, name="conv_c")(r)
    flat = keras.layers.Dense(6, name="fc_flat")(keras.layers.Flatten(name="flatten")(keras.layers.ReLU()(c)))
    e = keras.layers.Conv2D(5, 1, name="conv_e")(r)
    pooled = keras.layers.Dense(6, name="fc_pool")(keras.layers.GlobalAveragePooling2D(name="pool")(e))
    x = keras.layers.Concatenate(name="concat")([flat, pooled])
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="branchy")


def _mobilenet():
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
    return keras_smart.convert(model, method="smart")


def _design(smart, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras_smart.design_masks(smart, granularity="channel", **options)


def _channel_mask(mask, axis):
    """The kept channels of a channel-structured mask; fails unless every slice along `axis` is all 0 or all 1."""
    moved = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1)
    assert np.all((moved == moved[:, :1])), "a channel slice mixes kept and dropped weights"
    return moved[:, 0]


def _check_groups(smart, masks, density):
    """Every group member keeps whole channels, at the group's density per path; all else all ones."""
    plan = keras_smart.channel_plan(smart)
    designed = set()
    for group in plan.groups:
        for path, suffix in enumerate(("clean_mask", "adv_mask") if len(density) == 2 else ("mask",)):
            kept = [_channel_mask(masks[m.layer][f"{m.kernel}_{suffix}"], m.axis) for m in group.members]
            for other in kept[1:]:
                np.testing.assert_array_equal(other, kept[0])
            assert kept[0].sum() == max(1, round(density[path] * group.channels)), (group.layers, suffix)
        designed.update(group.layers)
    for name, layer_masks in masks.items():
        if name not in designed:
            assert all(m.all() for m in layer_masks.values()), name
    return plan


@pytest.mark.parametrize("score, density", [("magnitude", (0.5, 0.5)), ("random", (0.5, 0.25))])
def test_channel_masks_keep_whole_channels_at_each_groups_density(score, density):
    smart = keras_smart.convert(_branchy_model(), method="smart")
    plan = _check_groups(smart, _design(smart, score=score, density=density), density)
    assert [g.layers for g in plan.groups] == [("conv_a", "dw"), ("conv_c",), ("conv_e",)]


def test_the_plan_names_why_each_pinned_layer_keeps_its_channels():
    plan = keras_smart.channel_plan(keras_smart.convert(_branchy_model(), method="smart"))
    assert plan.pinned == {
        "conv_b": "its output feeds the residual addition 'add'",
        "shortcut": "its output feeds the residual addition 'add'",
        "fc_flat": "its output feeds 'concat' (Concatenate), which mixes channels",
        "fc_pool": "its output feeds 'concat' (Concatenate), which mixes channels",
        "logits": "it produces the model's output",
    }
    a, flat, pooled = plan.groups
    assert {c.layer for c in a.consumers} == {"conv_b", "shortcut"}
    assert [(c.layer, c.flattened) for c in flat.consumers] == [("fc_flat", True)]
    assert [(c.layer, c.flattened) for c in pooled.consumers] == [("fc_pool", False)]


def test_snip_channel_masks_on_digits_and_the_floats_single_mask():
    x, y = keras_smart.data.digits("train")
    smart = keras_smart.convert(_branchy_model(), method="smart")
    attack = keras_smart.AttackConfig(kind="fgsm", eps=0.1)
    masks = _design(smart, score="snip", density=(0.5, 0.25), data=(x[:16], y[:16]), attack=attack)
    _check_groups(smart, masks, (0.5, 0.25))
    floats = keras_smart.convert(_branchy_model(), method="floats")
    _check_groups(floats, _design(floats, score="magnitude", density=0.5), (0.5,))


def test_overlap_floor_and_dense_layers_count_channels():
    smart = keras_smart.convert(_branchy_model(), method="smart")
    masks = _design(smart, score="random", density=(0.5, 0.5), max_overlap=0.0, dense_layers=["conv_c"])
    clean = _channel_mask(masks["conv_e"]["kernel_clean_mask"], 3)
    adv = _channel_mask(masks["conv_e"]["kernel_adv_mask"], 3)
    assert clean.sum() == adv.sum() == 2 and not np.any(clean * adv)
    assert masks["conv_c"]["kernel_clean_mask"].all() and masks["conv_c"]["kernel_adv_mask"].all()
    masks = _design(smart, score="random", density=0.1, min_density=0.5)
    assert _channel_mask(masks["conv_a"]["kernel_adv_mask"], 3).sum() == 4


def test_mobilenet_depthwise_follows_its_producer_and_residual_kernels_keep_all_channels():
    smart = _mobilenet()
    with pytest.warns(UserWarning, match="'block_2_project': its output feeds the residual addition 'block_2_add'"):
        masks = keras_smart.design_masks(smart, score="random", density=(0.5, 0.25), granularity="channel")
    plan = _check_groups(smart, masks, (0.5, 0.25))
    depthwise = [n for g in plan.groups for n in g.layers[1:]]
    assert len(depthwise) == 17 and all(n.endswith("depthwise") for n in depthwise)
    producer, joined = plan.group_of("block_5_depthwise").members
    assert (producer.layer, joined.layer, joined.axis) == ("block_5_expand", "block_5_depthwise", 2)
    for path in ("clean", "adv"):
        expand = _channel_mask(masks["block_5_expand"][f"kernel_{path}_mask"], 3)
        np.testing.assert_array_equal(_channel_mask(masks[joined.layer][f"{joined.kernel}_{path}_mask"], 2), expand)
        assert 0 < expand.sum() < expand.size
    for name in ("block_2_project", "block_5_project", "block_15_project"):
        assert plan.pinned[name].startswith("its output feeds the residual addition 'block_")
        assert all(m.all() for m in masks[name].values())
    assert plan.pinned["predictions"] == "it produces the model's output"
    assert plan.group_of("Conv_1").consumers[0].layer == "predictions"  # through global pooling


def test_resnet_kernels_feeding_an_add_are_pinned():
    smart = keras_smart.convert(keras_smart.backbones.resnet(8, input_shape=(28, 28, 1)), method="smart")
    masks = _design(smart, score="magnitude", density=0.5)
    plan = _check_groups(smart, masks, (0.5, 0.5))
    assert plan.pinned["stage1_block0_b_conv"] == "its output feeds the residual addition 'stage1_block0_add'"
    assert plan.pinned["stage2_block0_shortcut_conv"] == "its output feeds the residual addition 'stage2_block0_add'"
    assert plan.pinned["logits"] == "it produces the model's output"
    assert [g.layers for g in plan.groups] == [(f"stage{s}_block0_a_conv",) for s in (1, 2, 3)]
    assert _channel_mask(masks["stage2_block0_a_conv"]["kernel_clean_mask"], 3).sum() == 16


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"granularity": "chanel"}, 'granularity` must be "weight" or "channel". Received: granularity=\'chanel\''),
        ({"granularity": "channel", "allocation": "global"}, 'use allocation="layer"'),
    ],
)
def test_bad_granularity_settings_fail_clearly(kwargs, fragment):
    smart = keras_smart.convert(_branchy_model(), method="smart")
    with pytest.raises(ValueError, match=fragment):
        keras_smart.design_masks(smart, **kwargs)
