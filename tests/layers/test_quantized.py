"""Binary-Relax projections, the relaxed kernel, and the layers that carry it."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import layers as cl
from keras_smart.layers import quantized
from tests.models import keras

_W = np.array([[0.1, -0.4], [0.8, -2.0], [-0.5, 0.3]], "float32")
_SUPPORT = np.array([[1, 1], [1, 0], [1, 1]], "float32")


def _project(bits, axes=None, support=None, w=_W):
    return quantized.project(tf.constant(w), bits, axes=axes, support=support).numpy()


def test_binary_is_the_mean_magnitude_times_the_sign():
    alpha = np.abs(_W).mean()
    np.testing.assert_allclose(_project("binary"), alpha * np.sign(_W), rtol=1e-6)
    # Per output channel (columns), over the support only: 0 outside it.
    alpha = np.array([(0.1 + 0.8 + 0.5) / 3, (0.4 + 0.3) / 2])
    np.testing.assert_allclose(_project("binary", (-1,), _SUPPORT), alpha * np.sign(_W) * _SUPPORT, rtol=1e-6)


def test_ternary_keeps_weights_above_0_7_mean_magnitude_at_their_mean():
    # mean |W| = 4.1 / 6, delta = 0.478: keeps 0.8, -2.0, -0.5 at alpha = 3.3 / 3.
    expected = 1.1 * np.array([[0, 0], [1, -1], [-1, 0]])
    np.testing.assert_allclose(_project("ternary"), expected, rtol=1e-6)
    # Column 0: delta = 0.7 * 1.4 / 3, keeps 0.8 and -0.5 (alpha 0.65); column 1 over {-0.4, 0.3}:
    # delta = 0.245, keeps both (alpha 0.35); the masked -2.0 is 0.
    expected = np.array([[0.0, -0.35], [0.65, 0.0], [-0.65, 0.35]])
    np.testing.assert_allclose(_project("ternary", (-1,), _SUPPORT), expected, rtol=1e-6)


def test_int4_rounds_to_15_levels_with_a_least_squares_scale():
    w = np.array([0.7, -0.33, 0.12, 0.02], "float32")
    codes = np.array([7, -3, 1, 0])  # step max|W| / 7 = 0.1
    alpha = w @ codes / (codes @ codes)
    np.testing.assert_allclose(_project("int4", w=w), alpha * codes, rtol=1e-5)
    # Per channel with a support: column 0 over {0.1, 0.8, -0.5}, column 1 over {-0.4, 0.3}.
    codes = np.array([[1, -7], [7, 0], [-4, 5]])  # steps 0.8 / 7 and 0.4 / 7
    alpha = (_W * codes * _SUPPORT).sum(0) / (codes * codes * _SUPPORT).sum(0)
    np.testing.assert_allclose(_project("int4", (-1,), _SUPPORT), alpha * codes, rtol=1e-5)


@pytest.mark.parametrize("bits", quantized.BITS)
def test_every_projection_is_exactly_idempotent_and_zero_outside_the_support(bits):
    rng = np.random.default_rng(0)
    for axes in (None, (-1,), (-2, -1)):
        w = rng.normal(size=(3, 3, 4, 5)).astype("float32")
        support = (rng.random(w.shape) < 0.6).astype("float32")
        for s in (None, support):
            once = _project(bits, axes, s, w=w)
            np.testing.assert_array_equal(_project(bits, axes, s, w=once), once)
        assert not once[support == 0].any()


def test_relaxed_is_the_average_at_eta_1_and_exactly_q_at_infinity():
    w = tf.constant(_W)
    q = quantized.project(w, "ternary")
    np.testing.assert_allclose(quantized.relaxed(w, "ternary", 1.0), (_W + q.numpy()) / 2, rtol=1e-6)
    np.testing.assert_allclose(quantized.relaxed(w, "ternary", 3.0), (_W + 3 * q.numpy()) / 4, rtol=1e-6)
    np.testing.assert_array_equal(quantized.relaxed(w, "ternary", float("inf")), q)


def test_the_gradient_at_the_relaxed_kernel_reaches_w_unchanged():
    layer = cl.QuantizedDense(3, use_bias=False, quantization={"bits": "binary"})
    x = tf.constant([[1.0, -2.0, 0.5, 3.0]])
    layer(x)
    c = tf.constant([[0.3, -1.0, 2.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * c)
    u = quantized.relaxed(layer.kernel, "binary", 1.0)
    np.testing.assert_allclose(layer(x), x @ u, rtol=1e-6)  # the forward uses U
    np.testing.assert_allclose(tape.gradient(loss, layer.kernel), tf.transpose(x) @ c, rtol=1e-6)  # dL/dU


def test_a_dual_mask_kernel_is_relaxed_over_the_union_of_its_masks():
    layer = cl.DualMaskDense(2, use_bias=False, quantization="ternary")
    layer.build((None, 3))
    layer.kernel.assign(_W)
    layer.assign_mask("kernel_clean_mask", np.array([[1, 0], [1, 0], [0, 1]], "float32"))
    layer.assign_mask("kernel_adv_mask", np.array([[1, 1], [0, 0], [1, 1]], "float32"))
    union = np.array([[1, 1], [1, 0], [1, 1]], "float32")
    np.testing.assert_array_equal(layer.quantization_support("kernel"), union)
    layer.relax_eta.assign(np.inf)
    q = _project("ternary", None, union)
    for tradeoff, mask in ((0.0, "kernel_clean_mask"), (1.0, "kernel_adv_mask")):
        np.testing.assert_array_equal(layer.folded_weights(tradeoff)["kernel"], q * layer.mask_value(mask))


def test_channel_axes_index_the_output_channels():
    dense = cl.QuantizedDense(2)
    depthwise = cl.QuantizedDepthwiseConv2D(3)
    separable = cl.QuantizedSeparableConv2D(4, 3)
    assert dense.channel_axes("kernel") == (-1,)
    assert cl.QuantizedConv2DTranspose(2, 3).channel_axes("kernel") == (-2,)
    assert depthwise.channel_axes(depthwise.kernel_names[0]) == (-2, -1)
    assert separable.channel_axes("depthwise_kernel") == (-2, -1)
    assert separable.channel_axes("pointwise_kernel") == (-1,)


def _relaxed_model(layer, shape):
    inputs = keras.Input(shape)
    return keras_smart.SmartModel(inputs, layer(inputs))


@pytest.mark.parametrize("make", [
    lambda: cl.QuantizedConv2D(3, 3, quantization={"bits": "int4", "per_channel": True}, name="q"),
    lambda: cl.DualMaskConv2D(3, 3, quantization={"bits": "ternary"}, name="q"),
], ids=["QuantizedConv2D", "DualMaskConv2D"])
def test_keras_file_keeps_bits_and_relax_eta(make, tmp_path):
    model = _relaxed_model(make(), (6, 6, 2))
    model.get_layer("q").relax_eta.assign(3.0)
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 2)).astype("float32")
    path = str(tmp_path / "q.keras")
    model.save(path)
    loaded = keras.models.load_model(path).get_layer("q")
    assert loaded.quantization == model.get_layer("q").quantization
    assert float(loaded.relax_eta.numpy()) == 3.0
    np.testing.assert_allclose(loaded(x), model.get_layer("q")(x), atol=1e-6)


def test_strip_folds_a_quantized_layer_into_the_plain_keras_layer():
    model = _relaxed_model(cl.QuantizedDense(3, quantization={"bits": "ternary"}, name="q"), (4,))
    model.get_layer("q").relax_eta.assign(2.0)
    plain = keras_smart.strip(model)
    assert type(plain.get_layer("q")) is keras.layers.Dense
    assert "quantization" not in plain.get_layer("q").get_config()
    x = np.random.default_rng(2).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(plain(x), model(x), atol=1e-6)


def test_bad_quantization_settings_name_the_choices():
    with pytest.raises(ValueError, match=r"\['binary', 'ternary', 'int4'\]"):
        cl.QuantizedDense(2, quantization={"bits": "int8"})
    with pytest.raises(ValueError, match="per_channel"):
        cl.QuantizedDense(2, quantization={"bits": "int4", "scale": 1})
    with pytest.raises(ValueError, match="binary_relax"):
        keras_smart.convert(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), quantization="int4")
