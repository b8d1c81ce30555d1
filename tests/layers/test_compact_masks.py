"""Masks stored packed (64 bits per int64): the same 0/1 masks in every reader, old files still load."""

import io
import zipfile

import h5py
import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import layers as cl
from keras_smart.layers import compact_masks

keras = _compat.keras


def _model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(5, 3, name="conv"),  # 45 weights: not a multiple of 8
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, name="fc"),
        ],
        name="tiny",
    )


def _random_masks(smart, seed=0):
    rng = np.random.default_rng(seed)
    masks = keras_smart.get_masks(smart)
    return {l: {n: (rng.random(m.shape) < 0.5).astype("float32") for n, m in ms.items()} for l, ms in masks.items()}


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (3, 3, 1, 5), (17, 9)])
def test_numpy_and_tensor_packing_agree_and_round_trip(shape):
    values = (np.random.default_rng(0).random(shape) < 0.5).astype("float32")
    packed = compact_masks.pack(values)
    assert packed.dtype == np.int64 and packed.shape == (compact_masks.packed_length(values.size),)
    np.testing.assert_array_equal(compact_masks.pack(tf.constant(values)).numpy(), packed)
    np.testing.assert_array_equal(compact_masks.unpack(packed, shape), values)
    np.testing.assert_array_equal(compact_masks.unpack(tf.constant(packed), shape).numpy(), values)


def test_masks_keep_their_names_and_take_one_bit_per_weight():
    smart = keras_smart.convert(_model(), "smart")
    conv = smart.get_layer("conv")
    stored = {_compat.weight_name(w): w for w in conv.weights}
    for name in ("kernel_clean_mask", "kernel_adv_mask"):
        assert tuple(stored[name].shape) == (1,) and tf.as_dtype(stored[name].dtype) == tf.int64
    masks = _random_masks(smart)
    keras_smart.set_masks(smart, masks)
    got = keras_smart.get_masks(smart)
    for layer, layer_masks in masks.items():
        for name, mask in layer_masks.items():
            np.testing.assert_array_equal(got[layer][name], mask)
            np.testing.assert_array_equal(smart.get_layer(layer).mask_tensor(name).numpy(), mask)


def test_a_file_with_full_shape_float_masks_still_loads(tmp_path):
    """A `.keras` file written before masks were packed holds float32 0/1 masks of the kernel's shape."""
    smart = keras_smart.convert(_model(), "smart")
    masks = _random_masks(smart)
    keras_smart.set_masks(smart, masks)
    path = str(tmp_path / "smart.keras")
    smart.save(path)
    old = str(tmp_path / "old.keras")
    _unpack_masks_in_file(path, old)
    loaded = keras.models.load_model(old)
    got = keras_smart.get_masks(loaded)
    for layer, layer_masks in masks.items():
        for name, mask in layer_masks.items():
            np.testing.assert_array_equal(got[layer][name], mask)
    x = np.random.default_rng(1).random((2, 8, 8, 1)).astype("float32")
    for tradeoff in (0.0, 1.0):
        keras_smart.set_tradeoff(smart, tradeoff)
        keras_smart.set_tradeoff(loaded, tradeoff)
        np.testing.assert_allclose(loaded(x), smart(x), atol=1e-6)


def _unpack_masks_in_file(path, old_path):
    """Rewrites a `.keras` file with every packed mask (an int64 layer entry) as its float kernel-shaped 0/1 array."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old_path, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "model.weights.h5":
                buffer = io.BytesIO(data)
                with h5py.File(buffer, "r+") as f:
                    packed = []
                    f["layers"].visititems(lambda n, o: packed.append(f"layers/{n}") if getattr(o, "dtype", None) == np.int64 else None)
                    assert packed, "no packed mask in the file"
                    for name in packed:
                        kernel_shape = f[name.rsplit("/", 1)[0] + "/0"].shape  # the layer's kernel (Conv2D, Dense)
                        value = compact_masks.unpack(f[name][()], kernel_shape)
                        del f[name]
                        f[name] = value
                data = buffer.getvalue()
            target.writestr(item, data)


def test_masks_in_a_jit_compiled_step_match_graph_mode():
    """Expanding the bits and re-packing them (what pruning does in a step) compile under XLA."""
    layer = cl.DualMaskDense(6, tradeoff_mode="blend")
    layer.build((None, 13))
    rng = np.random.default_rng(0)
    for name in layer.mask_names("kernel"):
        layer.assign_mask(name, (rng.random((13, 6)) < 0.5).astype("float32"))
    x = tf.constant(rng.random((4, 13)), tf.float32)

    def step():
        with tf.GradientTape() as tape, cl.tradeoff_override(0.3):
            loss = tf.reduce_sum(tf.square(layer(x)))
        return loss, tape.gradient(loss, layer.kernel)

    expected = step()
    for got, want in zip(tf.function(step, jit_compile=True)(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    keep = (rng.random((13, 6)) < 0.5).astype("float32")
    before = layer.mask_value("kernel_adv_mask")
    tf.function(lambda: layer.assign_mask("kernel_adv_mask", layer.mask_tensor("kernel_adv_mask") * keep),
                jit_compile=True)()
    np.testing.assert_array_equal(layer.mask_value("kernel_adv_mask"), before * keep)


def test_substituted_masks_give_the_gradient_with_respect_to_the_mask():
    """dL/dm = W * dL/dK for K = W * m (m all ones here, so dL/dK = dL/dW): what SNIP and learned scores take."""
    layer = cl.DualMaskDense(4, use_bias=False)
    layer.build((None, 5))
    x = tf.constant(np.random.default_rng(0).random((3, 5)), tf.float32)
    mask = layer.mask_tensor("kernel_adv_mask")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(mask)
        with compact_masks.substituted_masks({(layer, "kernel_adv_mask"): mask}), cl.tradeoff_override(1.0):
            loss = tf.reduce_sum(tf.square(layer(x)))
        kernel_grad = tape.gradient(loss, layer.kernel)
    np.testing.assert_allclose(tape.gradient(loss, mask), layer.kernel.numpy() * kernel_grad.numpy(), rtol=1e-5)
