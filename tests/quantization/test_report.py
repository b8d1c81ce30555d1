"""report(): bits, sizes and channel sparsity of the kernels a model computes with, counted by hand."""

import math

import numpy as np
import pytest

import keras_smart
from keras_smart import _compat
from keras_smart import quantization

keras = _compat.keras

# conv 3x3x2x6 (108) + bias 6; logits 54x3 (162) + bias 3.
_CONV, _LOGITS, _ALL = 108, 162, 108 + 6 + 162 + 3


def _plain():
    inputs = keras.Input((5, 5, 2))
    h = keras.layers.Flatten(name="flat")(keras.layers.Conv2D(6, 3, name="conv")(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))


def _kernel_with_zero_channels(zero_channels, shape=(3, 3, 2, 6)):
    """A kernel whose listed output channels are all zero; the others have weights of every size."""
    kernel = np.random.default_rng(1).normal(size=shape).astype("float32")
    kernel[..., 1] *= 1e-3  # tiny but non-zero: still a channel with weights
    kernel[..., list(zero_channels)] = 0.0
    return kernel


def test_zero_channels_bits_and_sizes_of_a_per_channel_ternary_model():
    model = quantization.binary_relax(_plain(), "ternary", per_channel=True)
    model.get_layer("conv").kernel.assign(_kernel_with_zero_channels((0, 4)))
    relaxed = quantization.report(model)
    assert not relaxed.pure
    quantization.finalize(model)
    result = quantization.report(model)
    assert result.pure and result.tradeoff == 0.0
    conv, logits = result.rows
    assert (conv["layer"], conv["kernel"], conv["bits"], conv["scales"]) == ("conv", "kernel", 2, 6)
    assert (conv["channels"], conv["zero_channels"]) == (6, 2)
    assert (logits["bits"], logits["scales"], logits["zero_channels"]) == (32, 0, 0)  # the classifier stays float
    folded = model.get_layer("conv").folded_weights(0.0)["kernel"]
    assert conv["nonzero"] == np.count_nonzero(folded) < 4 * 18  # ternary drops small weights too
    assert result.nonzero == conv["nonzero"] + np.count_nonzero(model.get_layer("logits").kernel.numpy())
    assert result.weights == _ALL and result.float_size_bytes == 4 * _ALL
    assert result.size_bytes == math.ceil(_CONV * 2 / 8) + 4 * 6 + 4 * (_ALL - _CONV)
    assert result.bits_per_weight == pytest.approx((2 * _CONV + 32 * _LOGITS) / (_CONV + _LOGITS))
    assert result.channel_sparsity == pytest.approx(2 / 6)
    assert result.as_dict()["rows"][0] == conv
    assert result.to_markdown().splitlines()[2] == f"| conv | kernel | 2 | 108 | {conv['nonzero']} | 2 / 6 |"


def test_per_tensor_binary_classifier_counts_one_scale_and_one_bit():
    model = quantization.finalize(quantization.binary_relax(_plain(), "binary", classifier=True))
    result = quantization.report(model)
    assert [(r["bits"], r["scales"]) for r in result.rows] == [(1, 1), (1, 1)]
    packed = math.ceil(_CONV / 8) + math.ceil(_LOGITS / 8) + 2 * 4
    assert result.size_bytes == packed + 4 * (_ALL - _CONV - _LOGITS)
    assert result.bits_per_weight == 1.0 and result.channel_sparsity == 0.0


def test_smart_paths_have_their_own_zero_channels():
    """A channel the adversarial mask removes is a zero channel on that path only."""
    smart = keras_smart.convert(_plain(), "smart")
    model = quantization.binary_relax(smart, "ternary", per_channel=True)
    conv = model.get_layer("conv")
    conv.kernel.assign(_kernel_with_zero_channels(()))
    adv_mask = np.ones(conv.kernel.shape, "float32")
    adv_mask[..., 3] = 0.0
    conv.assign_mask("kernel_adv_mask", adv_mask)
    quantization.finalize(model)
    clean, adv = quantization.report(model, tradeoff=0.0), quantization.report(model, tradeoff=1.0)
    assert (clean.rows[0]["zero_channels"], adv.rows[0]["zero_channels"]) == (0, 1)
    assert clean.rows[0]["nonzero"] > adv.rows[0]["nonzero"]
    assert clean.size_bytes == adv.size_bytes  # the same stored kernel, only the masks differ
    keras_smart.set_tradeoff(model, 1.0)
    assert quantization.report(model) == adv


def test_a_plain_model_counts_every_kernel_at_32_bits():
    model = _plain()
    result = quantization.report(model)
    assert result.tradeoff is None and result.bits_per_weight == 32.0
    assert result.size_bytes == result.float_size_bytes == 4 * _ALL and result.channel_sparsity == 0.0
    with pytest.raises(ValueError, match="plain Keras model.*Leave `tradeoff` unset"):
        quantization.report(model, tradeoff=1.0)
    with pytest.raises(TypeError, match="expects a keras.Model"):
        quantization.report("model")
