"""Binary masks stored compactly: 64 mask bits per int64, expanded to the kernel's shape where it is computed.

A mask weight ("kernel_clean_mask", "kernel_adv_mask", "kernel_mask") keeps its
name but holds ceil(n / 64) int64 words (n / 8 bytes) for a kernel of n
weights: bit i of word j is element 64j + i of the kernel flattened in C order
(NumPy's `packbits(bitorder="little")` read as little-endian int64). So a
SMART layer stores 1/16 of its kernel's bytes in masks instead of twice the
kernel's bytes. The word is int64, not uint8: TensorFlow's collectives (the
initial-value broadcast of `MultiWorkerMirroredStrategy`) take bool, float,
int32 and int64 only, and int32 tensors live in host memory on a GPU. The bits
are expanded with bitwise ops of static shape, so the expansion runs in every
graph, under XLA and under a distribution strategy. The export form (`base.separate_paths`)
reads the masks as constants instead, at trace time: LiteRT has no bitwise
ops and its converter does not fold them, but it folds W * constant.

Everything outside a layer reads and writes masks as full-shape 0/1 arrays
through `CompactMasks.mask_value` / `mask_tensor` / `assign_mask`; only this
module knows the packed form.
"""

import collections.abc
import contextlib
import threading

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart.layers import base

keras = _compat.keras

MASK_DTYPE = "int64"
_WORD = 64
_BITS = np.array([1 << i for i in range(_WORD)], np.uint64).view(np.int64)  # bit 63 is the sign bit
_STATE = threading.local()


def packed_length(size):
    """Words (int64) that hold `size` mask bits."""
    return (int(size) + _WORD - 1) // _WORD


def pack(values):
    """Packs 0/1 `values` (any shape; non-zero counts as 1) into an int64 vector (see the module doc).

    NumPy in, NumPy out; a tensor in (eagerly or in a graph, also under XLA), a tensor out.

    Example:
      >>> pack(np.array([1, 0, 1, 1]))
      array([13])
    """
    if not tf.is_tensor(values):
        flat = np.asarray(values).ravel() != 0
        flat = np.pad(flat, (0, packed_length(flat.size) * _WORD - flat.size))
        return np.packbits(flat, bitorder="little").view("<i8").astype(np.int64)
    bits = tf.cast(tf.not_equal(tf.reshape(values, [-1]), tf.zeros((), values.dtype)), tf.int64)
    size = bits.shape[0]
    bits = tf.pad(bits, [[0, packed_length(size) * _WORD - size]])
    # Distinct powers of two (bit 63 negative): every partial sum stays inside int64.
    return tf.reduce_sum(tf.reshape(bits, [-1, _WORD]) * tf.constant(_BITS), axis=1)


def unpack(packed, shape, dtype=None):
    """The 0/1 mask of `shape` that `pack` packed into `packed`: NumPy (float32) from NumPy, else a `dtype` tensor.

    Example:
      >>> unpack(np.array([13]), (2, 2))
      array([[1., 0.],
             [1., 1.]], dtype=float32)
    """
    shape = tuple(int(d) for d in shape)
    size = int(np.prod(shape))
    if not tf.is_tensor(packed):
        words = np.ascontiguousarray(np.asarray(packed, np.int64).astype("<i8"))
        bits = np.unpackbits(words.view(np.uint8), count=size, bitorder="little")
        return bits.reshape(shape).astype(dtype or "float32")
    bits = tf.reshape(tf.not_equal(tf.bitwise.bitwise_and(tf.expand_dims(packed, -1), tf.constant(_BITS)), 0), [-1])
    if size % _WORD:  # padding bits at the end
        bits = bits[:size]
    return tf.reshape(tf.cast(bits, dtype or tf.float32), shape)


@contextlib.contextmanager
def substituted_masks(substitutes):
    """Makes `mask_tensor` return the given tensors instead of the stored masks (read at trace time).

    Mask scores take dL/dm through it: a stored mask is integer bits, a
    substitute is a float tensor that a `tf.GradientTape` can watch.

    Args:
      substitutes: {(layer, mask name): float tensor of the kernel's shape}.
    """
    previous = getattr(_STATE, "substitutes", None)
    _STATE.substitutes = {**(previous or {}), **{(id(l), n): t for (l, n), t in substitutes.items()}}
    try:
        yield
    finally:
        _STATE.substitutes = previous


class CompactMasks:
    """Mixin for `ConditionalKernel`: its masks as packed int64 weights, read and written as 0/1 arrays.

    The layer supplies `kernel_names` and `mask_names(kernel_name)`.
    """

    def add_mask_weight(self, mask_name):
        """Adds the packed weight `mask_name` (all ones) over its kernel; call after the kernel is built."""
        size = int(np.prod(self.mask_shape(mask_name)))
        setattr(
            self,
            mask_name,
            self.add_weight(
                name=mask_name,
                shape=(packed_length(size),),
                dtype=MASK_DTYPE,
                initializer=keras.initializers.Constant(-1),  # every bit set
                trainable=False,
            ),
        )

    def mask_kernel_name(self, mask_name):
        """The kernel that mask `mask_name` covers."""
        for kernel_name in self.kernel_names:
            if mask_name in self.mask_names(kernel_name):
                return kernel_name
        masks = [n for k in self.kernel_names for n in self.mask_names(k)]
        raise ValueError(f"Layer '{self.name}' has no mask {mask_name!r}. Its masks: {masks}")

    def mask_shape(self, mask_name):
        """The full shape of mask `mask_name`: its kernel's shape."""
        return tuple(int(d) for d in getattr(self, self.mask_kernel_name(mask_name)).shape)

    def mask_tensor(self, mask_name, dtype=tf.float32):
        """Mask `mask_name` as a 0/1 `dtype` tensor of its kernel's shape (for the layer's math, in any graph)."""
        substitute = (getattr(_STATE, "substitutes", None) or {}).get((id(self), mask_name))
        if substitute is not None:
            return tf.cast(substitute, dtype)
        if base.paths_separated():  # export: a constant the converter folds into the kernel
            with tf.init_scope():
                return tf.constant(self.mask_value(mask_name), dtype)
        packed = tf.convert_to_tensor(_compat.tf_variable(getattr(self, mask_name)))
        return unpack(packed, self.mask_shape(mask_name), dtype)

    def path_mask_tensor(self, clean_name, adversarial_name, adversarial, dtype=tf.float32):
        """The mask `adversarial` (a boolean scalar tensor) selects, as `mask_tensor` gives it: the packed
        words are selected first, so only one mask is expanded."""
        if base.paths_separated() or getattr(_STATE, "substitutes", None):
            return tf.where(adversarial, self.mask_tensor(adversarial_name, dtype), self.mask_tensor(clean_name, dtype))
        words = [tf.convert_to_tensor(_compat.tf_variable(getattr(self, n))) for n in (clean_name, adversarial_name)]
        return unpack(tf.where(adversarial, words[1], words[0]), self.mask_shape(clean_name), dtype)

    def mask_value(self, mask_name):
        """Mask `mask_name` as a float32 0/1 NumPy array of its kernel's shape."""
        return unpack(np.asarray(getattr(self, mask_name).numpy()), self.mask_shape(mask_name))

    def assign_mask(self, mask_name, value):
        """Stores `value` (0/1, its kernel's shape; non-zero counts as 1) as mask `mask_name`.

        Takes a NumPy array eagerly, or a tensor eagerly or inside a `tf.function`.
        """
        shape = self.mask_shape(mask_name)
        if tuple(value.shape) != shape:
            raise ValueError(
                f"Mask '{self.name}'/{mask_name!r} must have shape {shape}. Received: shape {tuple(value.shape)}"
            )
        return _compat.tf_variable(getattr(self, mask_name)).assign(pack(value))

    def upgraded_store(self, store):
        """`store` (a layer's saved variables by index) with masks saved at full shape (files written before
        masks were packed: float 0/1 arrays of the kernel's shape) packed as this layer now holds them."""
        masks = {
            str(i): v for i, v in enumerate(self.weights) if _compat.weight_name(v) in self._all_mask_names()
        }
        return _UpgradedStore(store, {key: self._packed_saved_mask(v) for key, v in masks.items()})

    def _all_mask_names(self):
        return {n for k in self.kernel_names for n in self.mask_names(k)}

    def _packed_saved_mask(self, variable):
        shape = self.mask_shape(_compat.weight_name(variable))

        def convert(saved):
            saved = np.asarray(saved)
            if saved.dtype == np.dtype(MASK_DTYPE):
                return saved
            if saved.shape != shape:
                raise ValueError(
                    f"Saved mask '{self.name}'/{_compat.weight_name(variable)} has shape {saved.shape}; "
                    f"expected packed int64 words or the kernel's shape {shape}."
                )
            return pack(saved)

        return convert


class _UpgradedStore(collections.abc.Mapping):
    """A read-only view of a variable store that converts some entries as they are read."""

    def __init__(self, store, conversions):
        self._store = store
        self._conversions = conversions

    def __getitem__(self, key):
        value = self._store[key]
        convert = self._conversions.get(key)
        return value if convert is None else convert(value)

    def __iter__(self):
        return iter(self._store.keys())

    def __len__(self):
        return len(self._store.keys())
