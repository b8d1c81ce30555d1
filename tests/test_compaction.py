"""strip(..., compact=True): a physically narrower plain model that computes what the SmartModel computes."""

import numpy as np
import pytest

import keras_smart
from keras_smart import _compat
from keras_smart import compaction
from keras_smart import registry
from keras_smart.masks import access
from tests import models
from tests.models import keras

_ATOL = 1e-5


def _set_channel_masks(smart, densities, joined=(), seed=0):
    """Channel masks on the layers of `densities` ({name: (clean, adv)}); `joined`: (depthwise, producer) pairs
    whose depthwise channels follow their producer's. Returns {(layer, path): number of dropped channels}."""
    rng = np.random.default_rng(seed)
    masks, kept, dropped = {}, {}, {}
    for name, path_densities in densities.items():
        layer = smart.get_layer(name)
        for path, density in zip(("clean", "adv"), path_densities):
            shape = layer.kernel_masks("kernel")[f"kernel_{path}_mask"].shape
            keep = np.zeros(shape[-1], "float32")
            keep[rng.permutation(shape[-1])[: round(density * shape[-1])]] = 1.0
            masks.setdefault(name, {})[f"kernel_{path}_mask"] = np.broadcast_to(keep, shape).copy()
            kept[(name, path)], dropped[(name, path)] = keep, int(shape[-1] - keep.sum())
    for depthwise, producer in joined:
        (kernel_name,) = registry.kernel_names(smart.get_layer(depthwise))
        for path in ("clean", "adv"):
            shape = smart.get_layer(depthwise).kernel_masks(kernel_name)[f"{kernel_name}_{path}_mask"].shape
            keep = kept[(producer, path)][:, None]
            masks.setdefault(depthwise, {})[f"{kernel_name}_{path}_mask"] = np.broadcast_to(keep, shape).copy()
    access.set_masks(smart, masks)
    return dropped


def _randomize_batch_norm(model, seed=0):
    """Every batch-norm set gets random statistics, so a dropped channel's constant is not zero."""
    rng = np.random.default_rng(seed)
    for layer in _compat.flatten_layers(model):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        for variable in layer.weights:
            name = _compat.weight_name(variable)
            if "variance" in name:
                variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype("float32"))
            elif any(key in name for key in ("gamma", "beta", "mean")):
                variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))


def _check_outputs(smart, narrow, x, tradeoff):
    keras_smart.set_tradeoff(smart, tradeoff)
    expected = smart(x, training=False)
    assert models.max_abs_diff(narrow(x, training=False), expected) <= _ATOL


def _resnet8():
    smart = keras_smart.convert(keras_smart.backbones.resnet(8, input_shape=(28, 28, 1)), "smart")
    first_convs = {f"stage{s}_block0_a_conv": (0.5, 0.75) for s in (1, 2, 3)}
    return smart, first_convs, models.inputs_for(smart, batch=4)


def test_resnet_loses_the_masked_channels_and_keeps_its_outputs_at_both_ends():
    smart, first_convs, x = _resnet8()
    dropped = _set_channel_masks(smart, first_convs)
    for tradeoff, path in ((0.0, "clean"), (1.0, "adv")):
        plain = keras_smart.strip(smart, tradeoff)
        narrow = keras_smart.strip(smart, tradeoff, compact=True)
        expected = 0
        for name in first_convs:
            conv, d = plain.get_layer(name), dropped[(name, path)]
            inputs, filters = conv.input.shape[-1], conv.filters
            expected += d * (9 * inputs + 4 + 9 * filters)  # its kernel slice, its batch-norm, the next conv's rows
            assert narrow.get_layer(name).filters == filters - d > 0
        assert plain.count_params() - narrow.count_params() == expected > 0
        assert type(narrow.get_layer("stage1_block0_a_conv")) is keras.layers.Conv2D
        _check_outputs(smart, narrow, x, tradeoff)


def test_one_kept_channel_carries_the_non_zero_constants_before_a_zero_padded_convolution():
    """relu(batch-norm(0)) > 0 is c times ones-with-a-zero-border to the 3x3 'same' convolution: the largest such
    channel stays and carries the others (its kernel rows take theirs, scaled); zero constants just go."""
    smart, first_convs, x = _resnet8()
    _set_channel_masks(smart, first_convs)
    _randomize_batch_norm(smart)
    kinds = set()
    for tradeoff, path in ((0.0, "clean"), (1.0, "adv")):
        plain = keras_smart.strip(smart, tradeoff)
        narrow = keras_smart.strip(smart, tradeoff, compact=True)
        for name in first_convs:
            bn = plain.get_layer(name.replace("_conv", "_bn"))
            gamma, beta, mean, variance = bn.get_weights()
            constant = np.maximum(beta - gamma * mean / np.sqrt(variance + bn.epsilon), 0.0)
            masked_out = keras_smart.get_masks(smart)[name][f"kernel_{path}_mask"].max(axis=(0, 1, 2)) == 0
            carried = masked_out & (constant > 0)
            kinds.update(({"carried"} if carried.sum() > 1 else set()) | (
                {"dropped"} if np.any(masked_out & (constant == 0)) else set()))
            kept = plain.get_layer(name).filters - masked_out.sum() + int(carried.any())
            assert narrow.get_layer(name).filters == kept
        _check_outputs(smart, narrow, x, tradeoff)
    assert kinds == {"carried", "dropped"}


def test_mobilenet_v2_drops_expand_and_depthwise_channels_together():
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
    smart = keras_smart.convert(base, "smart")
    blocks = [l.name[: -len("_expand")] for l in smart.layers if l.name.endswith("_expand")]
    dropped = _set_channel_masks(
        smart, {f"{b}_expand": (0.5, 0.75) for b in blocks}, joined=[(f"{b}_depthwise", f"{b}_expand") for b in blocks]
    )
    x = models.inputs_for(smart, batch=2)
    for tradeoff, path in ((0.0, "clean"), (1.0, "adv")):
        plain = keras_smart.strip(smart, tradeoff)
        narrow = keras_smart.strip(smart, tradeoff, compact=True)
        expected = 0
        for block in blocks:
            expand, project = plain.get_layer(f"{block}_expand"), plain.get_layer(f"{block}_project")
            # expand kernel slice, 2 batch-norms, the 3x3 depthwise slice, the project conv's rows
            expected += dropped[(f"{block}_expand", path)] * (expand.input.shape[-1] + 4 + 9 + 4 + project.filters)
        assert plain.count_params() - narrow.count_params() == expected > 0
        _check_outputs(smart, narrow, x, tradeoff)
    _randomize_batch_norm(smart)  # non-zero constants: the project convs absorb them into a bias they did not have
    narrow = keras_smart.strip(smart, 1.0, compact=True)
    assert narrow.get_layer("block_1_project").use_bias and not base.get_layer("block_1_project").use_bias
    _check_outputs(smart, narrow, x, 1.0)


def _kept_channels(smart, tradeoff):
    """{kernel layer: output channels its mask keeps at `tradeoff`}."""
    path = "clean" if tradeoff == 0.0 else "adv"
    return {
        name: int(masks[f"kernel_{path}_mask"].max(axis=tuple(range(masks[f"kernel_{path}_mask"].ndim - 1))).sum())
        for name, masks in keras_smart.get_masks(smart).items()
        if f"kernel_{path}_mask" in masks
    }


def _check_channel_design(base, seed, every_masked_channel_goes):
    """`every_masked_channel_goes`: no masked channel meets a zero-padded convolution with a non-zero constant."""
    smart = keras_smart.convert(base, "smart")
    keras_smart.design_masks(smart, score="magnitude", density=(0.5, 0.75), granularity="channel")
    _randomize_batch_norm(smart, seed)
    x = models.inputs_for(smart, batch=2)
    for tradeoff in (0.0, 1.0):
        plain, narrow = keras_smart.strip(smart, tradeoff), keras_smart.strip(smart, tradeoff, compact=True)
        kept = _kept_channels(smart, tradeoff)
        narrowed = [l for l in narrow.layers if getattr(l, "filters", None) not in (None, getattr(
            plain.get_layer(l.name), "filters", None))]
        assert narrowed and all(kept[l.name] <= l.filters <= kept[l.name] + 1 for l in narrowed), (
            "a layer loses its masked channels but one that carries the constants a zero-padded convolution sees")
        if every_masked_channel_goes:
            assert all(l.filters == kept[l.name] for l in narrowed)
        assert narrow.count_params() < plain.count_params()
        _check_outputs(smart, narrow, x, tradeoff)


@pytest.mark.filterwarnings("ignore:design_masks.granularity='channel'. keeps every output channel")
def test_channel_designed_mobilenet_v2_compacts_at_both_ends():
    _check_channel_design(
        keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10), seed=1,
        every_masked_channel_goes=True,
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:design_masks.granularity='channel'. keeps every output channel")
def test_channel_designed_resnet50v2_compacts_at_both_ends():
    _check_channel_design(
        keras.applications.ResNet50V2(input_shape=(32, 32, 3), weights=None, classes=10), seed=2,
        every_masked_channel_goes=False,  # conv*_1_conv -> batch-norm -> relu -> ZeroPadding2D: one constant stays
    )


def test_a_flatten_dense_head_and_valid_convolutions_absorb_non_zero_constants():
    inputs = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv1")(inputs)  # valid: absorbs relu(bias) in conv2
    h = keras.layers.Conv2D(8, 3, strides=2, name="conv2")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.MaxPooling2D(2, padding="same", name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    smart = keras_smart.convert(keras.Model(inputs, keras.layers.Dense(5, name="logits")(h)), "smart")
    rng = np.random.default_rng(0)
    for name in ("conv1", "conv2"):
        layer = smart.get_layer(name)
        layer.bias.assign(rng.uniform(0.2, 1.0, layer.bias.shape).astype("float32"))
    _randomize_batch_norm(smart)
    dropped = _set_channel_masks(smart, {"conv1": (0.5, 0.5), "conv2": (0.5, 0.75)})
    x = models.inputs_for(smart, batch=4)
    for tradeoff, path in ((0.0, "clean"), (1.0, "adv")):
        narrow = keras_smart.strip(smart, tradeoff, compact=True)
        assert narrow.get_layer("conv1").filters == 6 - dropped[("conv1", path)]
        kept = 8 - dropped[("conv2", path)]
        assert tuple(narrow.get_layer("logits").kernel.shape) == (2 * 2 * kept, 5)  # every position's rows of a kept channel
        _check_outputs(smart, narrow, x, tradeoff)


def test_all_ones_masks_change_nothing_and_weights_pruned_inside_kept_channels_stay():
    smart, first_convs, x = _resnet8()
    plain = keras_smart.strip(smart, 0.0)
    assert keras_smart.strip(smart, 0.0, compact=True).count_params() == plain.count_params()
    dropped = _set_channel_masks(smart, first_convs)
    reference = keras_smart.strip(smart, 0.0, compact=True).count_params()
    conv = smart.get_layer("stage2_block0_a_conv")  # pruned after the channel design: zeros inside kept channels
    kernel = conv.kernel.numpy()
    kernel[..., ::2, :] = 0.0
    conv.kernel.assign(kernel)
    narrow = keras_smart.strip(smart, 0.0, compact=True)
    assert narrow.count_params() == reference
    assert narrow.get_layer(conv.name).filters == conv.filters - dropped[(conv.name, "clean")]
    _check_outputs(smart, narrow, x, 0.0)


def test_masks_mixing_zeros_and_ones_in_a_channel_are_refused_at_the_tradeoff_that_uses_them():
    smart, first_convs, _ = _resnet8()
    _set_channel_masks(smart, first_convs)
    name = "stage2_block0_a_conv"
    shape = smart.get_layer(name).kernel_masks("kernel")["kernel_adv_mask"].shape
    unstructured = (np.random.default_rng(0).random(shape) < 0.5).astype("float32")
    keras_smart.set_masks(smart, {name: {"kernel_adv_mask": unstructured}})
    assert keras_smart.strip(smart, 0.0, compact=True).count_params() < keras_smart.strip(smart, 0.0).count_params()
    with pytest.raises(ValueError, match=rf"Layer '{name}'.*kernel_adv_mask.*not channel-structured.*"
                                         r'granularity="channel"'):
        keras_smart.strip(smart, 1.0, compact=True)


def test_compact_needs_masks_and_a_bool():
    smart = keras_smart.convert(models.conv_block_model(), "float")
    with pytest.raises(ValueError, match="has no masks.*method='smart'"):
        keras_smart.strip(smart, 0.0, compact=True)
    with pytest.raises(TypeError, match="`compact` must be True or False"):
        keras_smart.strip(smart, 0.0, compact="yes")
    with pytest.raises(TypeError, match="Functional"):
        compaction.compact(keras.layers.Dense(3))
