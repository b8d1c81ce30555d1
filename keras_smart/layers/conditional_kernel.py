"""Kernels that depend on the trade-off (binary masks, weight noise).

A conditional conv/dense layer = `ConditionalKernel` (which kernel to use at lam)
+ one of the `kernel_math` mixins (what the Keras layer computes with that kernel)
+ the Keras layer class (configuration, weights, shapes).
"""

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart.layers import base
from keras_smart.layers import compact_masks
from keras_smart.layers import kernel_math
from keras_smart.layers import quantized

keras = _compat.keras

# A float32 weight that stays float32 under mixed precision.
_FLOAT32 = {"dtype": "float32", **_compat.NO_AUTOCAST}


class ConditionalKernel(compact_masks.CompactMasks, base.ConditionalLayer):
    """Adds masks and/or lam-scaled noise to the kernels named in `kernel_names`.

    Subclasses set `mask_kind` ("dual": one mask per path; "single": one mask
    shared by both paths; None) and whether the kernels are `noisy`.

    Kernel at trade-off lam (a = path weight, see `path_weight`):
      quantized: W is first replaced by Binary-Relax's relaxed kernel
              (W + eta * Q(W)) / (1 + eta), Q over the union of the kernel's
              masks, eta = the "relax_eta" weight (see `layers.quantized`)
      noisy:  W + lam * |alpha| * std(W) * eta * [W != 0], eta ~ N(0, 1) per call
      dual:   (...) * ((1 - a) * M_clean + a * M_adv)
      single: (...) * M

    Args (besides the subclass's and the Keras layer's own):
      quantization: None, or {"bits": one of `quantized.BITS`, "per_channel":
        bool}: relax the kernels towards that level set (set by
        `keras_smart.quantization.binary_relax`).
    """

    mask_kind = None
    noisy = False
    RELAX_ETA = "relax_eta"
    _quantization = None

    def __init__(self, *args, quantization=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Set past Keras's attribute tracking, which would wrap the dict in both flavours.
        object.__setattr__(self, "_quantization", quantized.check_quantization(quantization))

    @property
    def quantization(self):
        """{"bits": one of `quantized.BITS`, "per_channel": bool}, or None: not relaxed."""
        return None if self._quantization is None else dict(self._quantization)

    def get_config(self):
        config = super().get_config()
        if self.quantization is not None:
            config["quantization"] = self.quantization
        return config

    def source_config(self):
        config = super().source_config()
        config.pop("quantization", None)
        return config

    # --- state ----------------------------------------------------------------------------------

    def mask_names(self, kernel_name):
        """Names of the mask weights of one kernel ("kernel_clean_mask", ...)."""
        if self.mask_kind == "dual":
            return (f"{kernel_name}_clean_mask", f"{kernel_name}_adv_mask")
        if self.mask_kind == "single":
            return (f"{kernel_name}_mask",)
        return ()

    def noise_scale_name(self, kernel_name):
        return f"{kernel_name}_noise_scale"

    def conditioning_weight_names(self):
        if self.noisy:
            return tuple(self.noise_scale_name(k) for k in self.kernel_names)
        return super().conditioning_weight_names()

    def conditional_weight_names(self):
        names = []
        for kernel_name in self.kernel_names:
            names.extend(self.mask_names(kernel_name))
            if self.noisy:
                names.append(self.noise_scale_name(kernel_name))
        if self.quantization is not None:
            names.append(self.RELAX_ETA)
        return tuple(names)

    def build(self, input_shape):
        super().build(input_shape)
        for kernel_name in self.kernel_names:
            for mask_name in self.mask_names(kernel_name):
                self.add_mask_weight(mask_name)  # packed: one bit per weight (see `compact_masks`)
            if self.noisy:
                name = self.noise_scale_name(kernel_name)
                setattr(
                    self,
                    name,
                    self.add_weight(
                        name=name,
                        shape=(),
                        initializer=keras.initializers.Constant(self.noise_init),
                        trainable=True,
                    ),
                )
        if self.quantization is not None:
            self.relax_eta = self.add_weight(
                name=self.RELAX_ETA, shape=(), initializer="ones", trainable=False, **_FLOAT32
            )

    # --- computation ----------------------------------------------------------------------------

    def path_weight(self, lam):
        """How far lam moves the dual masks from clean (0) to adversarial (1): a step at 0."""
        return tf.cast(lam > 0.0, lam.dtype)

    def conditional_kernel(self, kernel_name, lam):
        """The kernel this layer computes with at trade-off `lam` (a float32 scalar tensor)."""
        kernel = self._source_kernel(kernel_name)
        if self.noisy and base.noise_enabled():
            kernel = kernel + tf.cast(lam, kernel.dtype) * self._noise(kernel_name, kernel)
        return self._masked(kernel_name, kernel, self.path_weight(lam))

    def _source_kernel(self, kernel_name):
        """The kernel before noise and masks (relaxed when quantized), in the compute dtype."""
        if self.quantization is not None:
            return tf.cast(self._relaxed_kernel(kernel_name), self.compute_dtype)
        return tf.cast(getattr(self, kernel_name), self.compute_dtype)

    def _noise(self, kernel_name, kernel):
        """The noise lam scales: |alpha| * std(W) * eta * [W != 0], eta ~ N(0, 1) drawn by this call.

        No noise on exact zeros: a pruned weight stays zero on the noisy path too.
        """
        dtype = kernel.dtype
        scale = tf.abs(tf.cast(getattr(self, self.noise_scale_name(kernel_name)), dtype))
        spread = tf.stop_gradient(tf.math.reduce_std(kernel))
        eta = tf.random.normal(tf.shape(kernel), dtype=dtype, seed=self.seed)
        return scale * spread * eta * tf.cast(tf.not_equal(kernel, 0.0), dtype)

    def _masked(self, kernel_name, kernel, a):
        """`kernel` through the masks at path weight `a` (linear in `kernel`)."""
        dtype = kernel.dtype
        names = self.mask_names(kernel_name)
        held = base.shared_weights_held()
        if self.mask_kind == "dual" and held is False and getattr(self, "tradeoff_mode", None) != "blend":
            return kernel * self.path_mask_tensor(*names, tf.cast(a, tf.float32) > 0.5, dtype)  # one of the two
        masks = [self.mask_tensor(name, dtype) for name in names]
        if self.mask_kind == "dual":
            if held is not False:
                shared = masks[0] * masks[1]
                holding = tf.stop_gradient(kernel) * shared + kernel * (1.0 - shared)
                kernel = holding if held is True else tf.where(held, holding, kernel)
            a = tf.cast(a, dtype)
            return kernel * ((1.0 - a) * masks[0] + a * masks[1])
        if self.mask_kind == "single":
            return kernel * masks[0]
        return kernel

    # --- Binary-Relax quantization ---------------------------------------------------------------

    def quantization_support(self, kernel_name):
        """The weights of one kernel that some mask keeps (the union of its masks), as a NumPy
        0/1 array; None when the kernel has no mask (every weight is kept)."""
        masks = list(self.kernel_masks(kernel_name).values())
        if not masks:
            return None
        return np.maximum.reduce([np.asarray(m, "float32") for m in masks]) if len(masks) > 1 else masks[0]

    def _support_tensor(self, kernel_name):
        masks = [self.mask_tensor(name, tf.float32) for name in self.mask_names(kernel_name)]
        if not masks:
            return None
        return masks[0] if len(masks) == 1 else tf.maximum(masks[0], masks[1])

    def _relaxed_kernel(self, kernel_name):
        """The relaxed float32 kernel (W + eta * Q(W)) / (1 + eta) at the layer's relax_eta."""
        return quantized.relaxed(
            tf.cast(getattr(self, kernel_name), tf.float32),
            self.quantization["bits"],
            tf.convert_to_tensor(self.relax_eta),
            axes=self.channel_axes(kernel_name) if self.quantization["per_channel"] else None,
            support=self._support_tensor(kernel_name),
        )

    def call(self, inputs):
        lam = self.current_tradeoff(per_sample=True)
        if lam.shape.rank and self._value_dependent():
            return self._per_example_call(inputs, lam)
        if lam.shape.rank:
            lam = tf.reduce_max(lam)  # a group shares one path
        if self.mask_kind == "dual" and base.paths_separated():
            return self._separated_call(inputs, lam)
        kernels = [self.conditional_kernel(name, lam) for name in self.kernel_names]
        return self._forward(inputs, *kernels)

    def _value_dependent(self):
        """Whether the kernel depends on lam itself, not only on the path lam selects: noise, blend."""
        blend = getattr(self, "tradeoff_mode", None) == "blend"
        return (self.noisy and base.noise_enabled()) or (blend and not base.paths_separated())

    def _per_example_call(self, inputs, lam):
        """`call` with one lam per example (a vector whose entries share one path: all 0 or all > 0).

        The kernel is linear in lam: K(lam) = B + c(lam) * D, with B the kernel
        without noise and D the noise (c = lam), or, in blend mode, B the clean
        path's kernel and D = adversarial - clean (c = lam). So
        f(x_i; K(lam_i)) = f(x_i; B) + c_i * f(x_i; D) (two products, any lam)
        before the bias and activation: a batch of mixed lam needs no split.
        """
        lam = tf.reshape(lam, [-1])
        if self.noisy:
            a = self.path_weight(tf.reduce_max(lam))
            sources = [self._source_kernel(name) for name in self.kernel_names]
            bases = [self._masked(n, k, a) for n, k in zip(self.kernel_names, sources)]
            deltas = [self._masked(n, self._noise(n, k), a) for n, k in zip(self.kernel_names, sources)]
        else:
            clean, adversarial = ([self.conditional_kernel(n, tf.constant(p)) for n in self.kernel_names] for p in (0.0, 1.0))
            bases, deltas = clean, [k1 - k0 for k0, k1 in zip(clean, adversarial)]
        coefficient = tf.cast(lam, self.compute_dtype)
        return self._bias_and_activation(self._per_example_linear(inputs, bases, deltas, coefficient))

    def _per_example_linear(self, inputs, bases, deltas, coefficient):
        """f(x_i; B) + c_i * f(x_i; D); two-kernel layers (SeparableConv2D) apply it stage by stage."""
        if len(bases) > 1:
            return self._staged_per_example_linear(inputs, bases, deltas, coefficient)
        return kernel_math.plus_per_row(self._linear(inputs, *bases), coefficient, self._linear(inputs, *deltas))

    def _separated_call(self, inputs, lam):
        """The export form of `call` (see `base.separate_paths`): one constant kernel per path."""
        if self.noisy and base.noise_enabled():
            raise ValueError(
                f"Layer '{self.name}' draws weight noise; `separate_paths()` needs the noise at its "
                "expectation: wrap the call in keras_smart.layers.expected_noise() as well."
            )
        paths = [
            [self.conditional_kernel(name, tf.constant(p, tf.float32)) for name in self.kernel_names]
            for p in (0.0, 1.0)
        ]
        if self._paths_equal():
            return self._forward(inputs, *paths[0])
        a = tf.cast(self.path_weight(lam), self.compute_dtype)
        continuous = getattr(self, "tradeoff_mode", None) == "blend"
        if len(self.kernel_names) > 1 and continuous:  # not linear in one kernel: blend the kernels
            kernels = [(1.0 - a) * k0 + a * k1 for k0, k1 in zip(*paths)]
            return self._forward(inputs, *kernels)
        outputs = (1.0 - a) * self._linear(inputs, *paths[0]) + a * self._linear(inputs, *paths[1])
        return self._bias_and_activation(outputs)

    def _paths_equal(self):
        """Whether both paths use the same masks (read now, at trace time, from the variables)."""
        with tf.init_scope():
            return all(
                np.array_equal(*[np.asarray(m) for m in self.kernel_masks(name).values()])
                for name in self.kernel_names
            )

    def _forward(self, inputs, *kernels):
        return self._bias_and_activation(self._linear(inputs, *kernels))

    def folded_weights(self, tradeoff):
        values = base.weights_by_name(self)
        path = float(self.path_weight(tf.constant(tradeoff, tf.float32)))
        folded = {k: v for k, v in values.items() if k not in self.conditional_weight_names()}
        for kernel_name in self.kernel_names:
            if self.quantization is not None:
                values[kernel_name] = folded[kernel_name] = np.asarray(self._relaxed_kernel(kernel_name))
            masks = [self.mask_value(name) for name in self.mask_names(kernel_name)]
            if self.mask_kind == "dual":
                folded[kernel_name] = values[kernel_name] * ((1.0 - path) * masks[0] + path * masks[1])
            elif self.mask_kind == "single":
                folded[kernel_name] = values[kernel_name] * masks[0]
        return folded

    def kernel_masks(self, kernel_name):
        """{mask name: NumPy array} of one kernel."""
        return {name: self.mask_value(name) for name in self.mask_names(kernel_name)}

    # --- saving: Keras 3's Conv/Dense store only kernel and bias; store every weight -------------

    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, self.upgraded_store(store))  # also full-shape float masks

    # --- TF-MOT (tf_keras): the kernels are what magnitude pruning may zero -----------------------

    def get_prunable_weights(self):
        return [getattr(self, name) for name in self.kernel_names]
