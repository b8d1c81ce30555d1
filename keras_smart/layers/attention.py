"""Multi-head attention whose projections (query, key, value, output) are conditional EinsumDense layers.

The attention itself (softmax(QK^T / sqrt(d)) V, masks, dropout) stays
Keras's: it has no weights. Keras creates the projections; right after, each
is replaced by the conditional EinsumDense of the method (same configuration
and initial weights), named "<layer name>_query", "<layer name>_key",
"<layer name>_value", ("<layer name>_gate",) "<layer name>_attention_output" so
that masks can address them by name across a model. Keras tracks, saves and
loads them under its own attributes, so `.keras` files, `clone_model` and
`get_weights` work as for the plain layer.
"""

from keras_smart import _compat
from keras_smart.layers import base
from keras_smart.layers import conditional_kernel as ck
from keras_smart.layers import kernel_math
from keras_smart.layers import dual_mask
from keras_smart.layers import noisy

keras = _compat.keras

# Projection i of a layer draws its noise with seed + i * _SEED_STRIDE (distinct noise per projection).
_SEED_STRIDE = 1_000_003

# The projections' own arguments and their defaults (as in DualMask and Noisy).
_OPTION_DEFAULTS = {"tradeoff_mode": "switch", "noise_init": 0.25, "seed": None, "masked": False}


class ConditionalAttention(_compat.AttentionProjectionsHook, base.ConditionalLayer):
    """Mixin: a MultiHeadAttention whose projections are `projection_class` layers.

    Takes the projection class's own arguments (`conditional_config_keys`) and
    forwards them to every projection. Its own `kernel_names` is (): its kernels
    live in its projections, which masks, counts and pruning see as layers.
    """

    projection_class = None
    kernel_names = ()

    def __init__(self, *args, **kwargs):
        options = {k: kwargs.pop(k) for k in self.conditional_config_keys if k in kwargs}
        if "seed" in options and not _compat.IS_LEGACY:
            kwargs["seed"] = options["seed"]  # Keras 3's MultiHeadAttention seeds its dropout with it too
        super().__init__(*args, **kwargs)
        self.conditional_options = self.check_options(**options)

    @classmethod
    def check_options(cls, **options):
        """Validates the projections' arguments; returns them normalised, defaults filled in."""
        unknown = sorted(set(options) - set(cls.conditional_config_keys))
        if unknown:
            raise TypeError(f"{cls.__name__} got unexpected argument(s) {unknown}.")
        checked = cls.projection_class.check_options(**options) or {}  # DualMask normalises, Noisy checks
        normalized = {**cls._option_defaults(), **options, **checked}
        if "noise_init" in normalized:
            normalized["noise_init"] = float(normalized["noise_init"])
        if "masked" in normalized:
            normalized["masked"] = bool(normalized["masked"])
        return normalized

    @classmethod
    def _option_defaults(cls):
        return {k: v for k, v in _OPTION_DEFAULTS.items() if k in cls.conditional_config_keys}

    @classmethod
    def check_source(cls, layer):
        """Raises if a projection of the plain `layer` is LoRA-enabled or quantized."""
        for name, projection in _compat.attention_projections(layer).items():
            problem = kernel_math.EinsumDenseMath.unsupported(projection)
            if problem:
                raise ValueError(
                    f"MultiHeadAttention layer '{layer.name}': its {name} projection {problem}; "
                    "conditional kernels need plain float kernels. Ways forward: merge or disable LoRA, "
                    f"convert the float model before quantizing it, {base.keep_plain_hint(layer)}."
                )

    def get_config(self):
        return {**super().get_config(), **dict(self.conditional_options)}

    @classmethod
    def from_config(cls, config):
        return super().from_config(dict(config))  # tf_keras's pops the build shapes from the dict it gets

    # --- the projections ------------------------------------------------------------------------

    def projections(self):
        """{"query", "key", "value", ["gate",] "attention_output": projection layer}; empty before build."""
        return _compat.attention_projections(self)

    def projections_created(self, shapes):
        reference = getattr(self, "_tradeoff_reference", None)
        for index, (name, plain) in enumerate(self.projections().items()):
            if isinstance(plain, base.ConditionalLayer):
                continue
            options = dict(self.conditional_options)
            if options.get("seed") is not None:
                options["seed"] = options["seed"] + index * _SEED_STRIDE
            projection = self.projection_class.from_config(
                {**plain.get_config(), "name": f"{self.name}_{name}", **options}
            )
            if plain.built:  # Keras 3 builds its projections (tf_keras: at the first call; below)
                projection.build(shapes[name])  # the output projection with the query's full shape
                projection.copy_source_weights(plain)
            if reference is not None:
                projection.bind_tradeoff(reference.variable)
            _compat.replace_attention_projection(self, name, projection)
        _compat.build_attention_projections(self)

    def bind_tradeoff(self, variable):
        super().bind_tradeoff(variable)
        for projection in self.projections().values():
            projection.bind_tradeoff(variable)

    # --- conversion to and from the plain MultiHeadAttention ------------------------------------

    def _pairs(self, layer):
        """[(name, own projection, `layer`'s projection)], after checking both have the same ones."""
        _compat.build_attention_projections(layer)
        own, other = self.projections(), _compat.attention_projections(layer)
        if set(own) != set(other):
            raise ValueError(
                f"Layer '{self.name}' has projections {sorted(own)} but '{layer.name}' has {sorted(other)}."
            )
        return [(name, own[name], other[name]) for name in own]

    def copy_source_weights(self, layer):
        for _, projection, plain in self._pairs(layer):
            projection.copy_source_weights(plain)

    def folded_weights(self, tradeoff):
        """{"<projection>/<weight>": value}, e.g. "query/kernel" (the plain layer's names repeat)."""
        return {
            f"{name}/{weight}": value
            for name, projection in self.projections().items()
            for weight, value in projection.folded_weights(tradeoff).items()
        }

    def assign_folded_to(self, layer, tradeoff):
        for _, projection, plain in self._pairs(layer):
            base.assign_weights_by_name(plain, projection.folded_weights(tradeoff))

    def get_prunable_weights(self):
        """TF-MOT (tf_keras): the projections' kernels."""
        projections = [p for p in self.projections().values() if isinstance(p, ck.ConditionalKernel)]
        return [weight for p in projections for weight in p.get_prunable_weights()]


@_compat.register_serializable
class DualMaskMultiHeadAttention(ConditionalAttention, keras.layers.MultiHeadAttention):
    """A `keras.layers.MultiHeadAttention` whose projections are `DualMaskEinsumDense` layers.

    Args (besides MultiHeadAttention's own): `tradeoff_mode`, `noise_init`,
    `seed`, as for `DualMaskEinsumDense`, given to every projection.

    Example:
      >>> mha = DualMaskMultiHeadAttention(num_heads=2, key_dim=8, name="mha")
      >>> y = mha(tf.zeros((2, 5, 16)), tf.zeros((2, 5, 16)))
      >>> sorted(mha.projections())
      ['attention_output', 'key', 'query', 'value']
    """

    source_class = keras.layers.MultiHeadAttention
    projection_class = dual_mask.DualMaskEinsumDense
    conditional_config_keys = dual_mask.DualMaskEinsumDense.conditional_config_keys


@_compat.register_serializable
class NoisyMultiHeadAttention(ConditionalAttention, keras.layers.MultiHeadAttention):
    """A `keras.layers.MultiHeadAttention` whose projections are `NoisyEinsumDense` layers.

    Args (besides MultiHeadAttention's own): `noise_init`, `seed`, `masked`, as
    for `NoisyEinsumDense`, given to every projection.

    Example:
      >>> y = NoisyMultiHeadAttention(2, 8, seed=0)(tf.zeros((2, 5, 16)), tf.zeros((2, 5, 16)))
      >>> tuple(y.shape)
      (2, 5, 16)
    """

    source_class = keras.layers.MultiHeadAttention
    projection_class = noisy.NoisyEinsumDense
    conditional_config_keys = noisy.NoisyEinsumDense.conditional_config_keys
