"""Binary-Relax models in LiteRT: binary/ternary kernels stored as exact int8 with per-channel scales."""

import os

import numpy as np
import pytest

from keras_smart import _compat
from keras_smart import export
from keras_smart import quantization
from tests.export import common

keras = _compat.keras

_LAYERS = ("c1", "c2")  # the relaxed kernels (the classifier stays float); each >= 1024 weights, which
# the converter's weight quantization needs (smaller kernels stay float32)


def _finalized(bits, zero_channels=()):
    """A tiny conv model, its convolutions quantized per channel; `zero_channels` of c1 are all zero."""
    inputs = keras.Input((8, 8, 8))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inputs)
    h = keras.layers.Conv2D(16, 3, activation="relu", name="c2")(h)
    h = keras.layers.Flatten(name="flat")(h)
    plain = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    model = quantization.binary_relax(plain, bits, per_channel=True)
    c1 = model.get_layer("c1")
    kernel = c1.kernel.numpy()
    kernel[..., list(zero_channels)] = 0.0
    c1.kernel.assign(kernel)
    return quantization.finalize(model)


def _decided_inputs(model, n=32):
    """The `n` of 256 random inputs with the widest top-1 margin: an untrained model's near-ties would
    make top-1 agreement a coin flip under any weight quantization."""
    x = np.random.default_rng(3).random((256, 8, 8, 8)).astype("float32")
    logits = np.sort(common.keras_outputs(model, x, 0.0), axis=-1)
    return x[np.argsort(logits[:, -2] - logits[:, -1])[:n]]


def _int8_kernels(path):
    """{shape: (int8 codes, per-channel scales, zero points, quantized dimension)} of the file's int8 tensors."""
    model = common.flatbuffer_utils.read_model(str(path))
    int8 = common.flatbuffer_utils.schema_fb.TensorType.INT8
    kernels = {}
    for tensor in model.subgraphs[0].tensors:
        data = model.buffers[tensor.buffer].data
        if tensor.type == int8 and data is not None and len(tensor.shape) >= 2:
            codes = np.frombuffer(bytes(data), np.int8).reshape(tensor.shape)
            q = tensor.quantization
            kernels[tuple(tensor.shape)] = (codes, np.asarray(q.scale), np.asarray(q.zeroPoint), q.quantizedDimension)
    return kernels


def _check_exact_kernels(model, path, levels):
    """Each relaxed kernel is in the file as int8, one scale per output channel, and dequantizes to Keras'."""
    stored = _int8_kernels(path)
    for name in _LAYERS:
        expected = np.moveaxis(model.get_layer(name).folded_weights(0.0)["kernel"], -1, 0)  # LiteRT: OHWI
        codes, scales, zero_points, axis = stored[expected.shape]
        assert axis == 0 and len(scales) == expected.shape[0] and not zero_points.any(), name
        assert set(np.unique(codes)) <= levels, (name, np.unique(codes))
        dequantized = codes * scales.reshape(-1, 1, 1, 1)
        np.testing.assert_allclose(dequantized, expected, rtol=1e-6, atol=1e-9, err_msg=name)
    return stored


def test_a_ternary_export_stores_exact_int8_kernels_per_channel_and_matches_keras(tmp_path):
    model = _finalized("ternary", zero_channels=(0, 5))
    x = _decided_inputs(model)
    float_file = export.to_tflite(model, tmp_path / "float.tflite", check_data=x)
    result = export.to_tflite(model, tmp_path / "ternary.tflite", quantize="dynamic", check_data=x)
    assert result.agreement == 1.0 and result.quantize == "dynamic"
    got, expected = common.run_file(result.path, x), common.keras_outputs(model, x, 0.0)
    np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(expected, -1))
    assert np.max(np.abs(got - expected)) <= 0.05 * np.max(np.abs(expected))  # int8 activations, exact kernels
    stored = _check_exact_kernels(model, result.path, {-127, 0, 127})
    c1_codes = stored[(16, 3, 3, 8)][0]
    assert not c1_codes[[0, 5]].any() and all(c1_codes[c].any() for c in range(1, 5))  # zero channels stay zero
    # One byte per kernel weight where float32 took four (less 12 bytes of scale and zero point per channel).
    kernel_weights = sum(codes.size for codes, *_ in stored.values())
    assert kernel_weights == 16 * 3 * 3 * (8 + 16) + 10 * 576  # the relaxed convolutions and the logits
    assert os.path.getsize(float_file.path) - result.size_bytes >= 2.9 * kernel_weights
    # This tiny model's float32 biases, scales and graph keep it above the 0.26 a CIFAR-size CNN reaches.
    assert result.size_bytes <= float_file.size_bytes / 3, (result.size_bytes, float_file.size_bytes)


def test_a_binary_export_stores_exact_int8_kernels_per_channel(tmp_path):
    model = _finalized("binary")
    x = _decided_inputs(model)
    result = export.to_tflite(model, tmp_path / "binary.tflite", quantize="dynamic", check_data=x)
    assert result.agreement == 1.0
    _check_exact_kernels(model, result.path, {-127, 127})
