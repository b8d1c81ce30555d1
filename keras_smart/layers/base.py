"""What every conditional layer shares: the trade-off it reads, and folding back to plain Keras."""

import collections
import contextlib
import threading

import numpy as np
import tensorflow as tf

from keras_smart import _compat

_STATE = threading.local()


@contextlib.contextmanager
def _scoped(name, value):
    """Sets trace-time state `name` to `value` for the scope, then restores it."""
    previous = getattr(_STATE, name, None)
    setattr(_STATE, name, value)
    try:
        yield
    finally:
        setattr(_STATE, name, previous)


def tradeoff_override(tradeoff):
    """Makes conditional layers read `tradeoff` instead of their model's trade-off variable.

    The override is read when a layer's `call` is traced, so it must wrap the
    call itself (inside a `tf.function`, around the model call). Training uses it
    to route a batch group through one path; export uses it to make lam an input.

    Args:
      tradeoff: a scalar float (Python number or tensor), or a per-example vector.

    Example:
      >>> with tradeoff_override(1.0):  # the adversarial path, whatever the model's trade-off
      ...     adv_logits = smart(x[:4])
      >>> tuple(adv_logits.shape)
      (4, 10)
    """
    return _scoped("tradeoff", tradeoff)


def expected_noise():
    """Makes noisy layers use the expectation of their noise (zero): deterministic outputs.

    `strip` folds noise the same way, so inside this scope a noisy SmartModel
    and its stripped model compute the same function. Read at trace time.

    Example:
      >>> noisy = keras_smart.convert(cnn, "float")
      >>> keras_smart.set_tradeoff(noisy, 1.0)
      >>> with expected_noise():
      ...     same = np.array_equal(noisy(x[:4]), noisy(x[:4]))
      >>> same
      True
    """
    return _scoped("noise_off", True)


def noise_enabled():
    return not getattr(_STATE, "noise_off", None)


def separate_paths():
    """Makes dual-mask layers compute each path with its own constant kernel (export form).

    Inside this scope a dual-mask layer computes `(1 - a) * f(x; W*M_clean) +
    a * f(x; W*M_adv)` (a = the path weight of lam) before its bias and
    activation, instead of one kernel `W * ((1 - a) * M_clean + a * M_adv)`.
    Both forms compute the same function; this one lets a converter fold each
    path's kernel into a constant, so a file with lam as an input stores two
    kernels (not W and two masks) and runs every convolution with constant
    weights. Two-kernel layers (SeparableConv2D) in blend mode, which are not
    linear in one kernel, blend their constant kernels instead. Noise must be
    at its expectation (`expected_noise()`). Read at trace time.

    Example:
      >>> with separate_paths(), expected_noise(), tradeoff_override(tf.constant(1.0)):
      ...     logits = smart(x[:4])
      >>> np.allclose(logits, keras_smart.strip(smart, tradeoff=1.0)(x[:4]), atol=1e-5)
      True
    """
    return _scoped("separate_paths", True)


def paths_separated():
    return bool(getattr(_STATE, "separate_paths", None))


def frozen_statistics(when=True):
    """Keeps dual batch-norm moving statistics still, also in training mode (attack steps).

    Read at trace time, like the other scopes here. `when` may be a boolean
    tensor: the statistics then stay still where it is true at run time.
    """
    return _scoped("frozen", when)


def statistics_frozen():
    """True, False, or a boolean tensor (see `frozen_statistics`)."""
    return _flag("frozen")


class RowGroups(collections.namedtuple("RowGroups", ["member", "share", "present"])):
    """Rows grouped by lam value: `member` [rows, values] one-hot, `share` = member / rows per value
    (a column averages its value's rows), `present` [values] 1.0 where a value has rows."""


def batch_norm_groups(tradeoffs, lam):
    """Makes training-mode dual batch-norm treat the rows of each lam in `tradeoffs` as their own batch.

    The train step routes a group of rows whose lam differ per row (element
    sampling); a step that split its batch by lam normalised each value's rows
    with their own statistics and moved the moving statistics once per value,
    in `tradeoffs` order. This scope reproduces that in one fixed-shape forward.
    `tradeoffs`: Python floats (empty: no grouping); `lam`: each row's, one of them.
    The grouping is computed here, once for every layer; read at trace time.
    """
    if not tradeoffs:
        return _scoped("bn_groups", None)
    member = tf.cast(tf.equal(tf.reshape(lam, [-1, 1]), tf.constant([tradeoffs], tf.float32)), tf.float32)
    count = tf.reduce_sum(member, 0)
    return _scoped("bn_groups", RowGroups(member, member / tf.maximum(count, 1.0), tf.cast(count > 0, tf.float32)))


def batch_norm_row_groups():
    """The `RowGroups` of `batch_norm_groups`, or None outside it."""
    return getattr(_STATE, "bn_groups", None)


def holding_shared_weights(when=True):
    """Makes dual-mask layers pass no gradient to the weights both of their masks keep.

    Training uses it around the clean path's forward when only the adversarial
    loss may train the shared weights (`AdversarialConfig(shared_weights=
    "adversarial")`): the clean path then trains its own weights and batch-norm
    only. Read at trace time; the computed values do not change. `when` may be
    a boolean tensor, as in `frozen_statistics`.
    """
    return _scoped("hold_shared", when)


def shared_weights_held():
    """True, False, or a boolean tensor (see `holding_shared_weights`)."""
    return _flag("hold_shared")


def _flag(name):
    value = getattr(_STATE, name, None)
    return value if isinstance(value, tf.Tensor) else bool(value)


def collecting_statistics(collector):
    """Makes dual batch-norm normalise with batch statistics and hand them to `collector`.

    Inside this scope (read at trace time, with any `training` value) a dual
    batch-norm layer calls `collector.add(layer, mean, mean_of_squares, count)`
    with the statistics of the batch it sees, normalises with them, and moves
    no moving statistics. `recalibrate_batchnorm` uses it.
    """
    return _scoped("collector", collector)


def statistics_collector():
    return getattr(_STATE, "collector", None)


def plain_weight_layers(model):
    """The layers of `model` (nested models opened) that hold weights and are not conditional.

    Their weights compute the same on every path. A layer with sublayers
    (e.g. LSTM, a plain MultiHeadAttention) is listed once, as itself. Layers
    whose weights are never trained (preprocessing statistics, e.g.
    Normalization) are not listed; layers frozen with `trainable=False` are.
    """
    for layer in model.layers:
        if isinstance(layer, _compat.keras.Model):
            yield from plain_weight_layers(layer)
        elif isinstance(layer, ConditionalLayer) or not layer.weights:
            continue
        elif layer.trainable_weights or not layer.trainable:
            yield layer


def keep_plain_hint(layer):
    """The way forward every conversion error offers: convert around the layer."""
    return f"or keep the layer plain: keras_smart.convert(model, ..., skip=[{layer.name!r}])"


class _VariableReference:
    """Holds the model's trade-off variable so that Keras does not track it as a layer weight."""

    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable


def weights_by_name(layer):
    """{short weight name: NumPy value} of a layer, the same keys in both Keras flavours."""
    return {_compat.weight_name(v): np.asarray(v.numpy()) for v in layer.weights}


def assign_weights_by_name(layer, values):
    """Assigns `values[name]` to each weight of `layer`; every weight must be given."""
    for variable in layer.weights:
        name = _compat.weight_name(variable)
        if name not in values:
            raise ValueError(
                f"No value for weight `{name}` of layer '{layer.name}'. Received values for: "
                f"{sorted(values)}"
            )
        variable.assign(values[name])


class ConditionalLayer:
    """Mixin for layers whose computation depends on the model's shared trade-off lam.

    A conditional layer subclasses the Keras layer it replaces (`source_class`),
    so it accepts the same configuration, and adds only its own arguments
    (`conditional_config_keys`). It does not own lam: `SmartModel` binds its one
    trade-off variable into every conditional layer it contains. An unbound layer
    reads lam = 0.
    """

    source_class = None
    conditional_config_keys = ()

    def conditioning_weight_names(self):
        """The weights this layer holds only to condition on the trade-off (masks excluded: they
        are counted as non-zeros). Here: the adversarial path's own copies ("adv_..."), if any."""
        return tuple(n for n in (_compat.weight_name(v) for v in self.weights) if n.startswith(ADV_PREFIX))

    def bind_tradeoff(self, variable):
        """Makes this layer read `variable` as its trade-off (done by `SmartModel`)."""
        self._tradeoff_reference = _VariableReference(variable)

    def current_tradeoff(self, per_sample=False):
        """The trade-off this call computes with, as a float32 tensor.

        Training may override lam with one value per example of a batch group
        that shares a path; layers that cannot use per-example values (kernels,
        batch-norm) get the group's value, `per_sample=True` layers (FiLM) the vector.
        """
        override = getattr(_STATE, "tradeoff", None)
        if override is not None:
            lam = tf.cast(override, tf.float32)
            if lam.shape.rank and not per_sample:
                lam = tf.reduce_max(lam)  # one path per group (-inf for an empty group: clean)
            return lam
        reference = getattr(self, "_tradeoff_reference", None)
        if reference is None:
            return tf.constant(0.0, tf.float32)
        return tf.cast(tf.convert_to_tensor(reference.variable), tf.float32)

    def get_prunable_weights(self):
        """TF-MOT's `PrunableLayer` protocol (tf_keras flavour): nothing here by default."""
        return []

    # --- conversion to and from the plain Keras layer -------------------------------------------

    def copy_source_weights(self, layer):
        """Copies the weights of the plain `layer` this one was converted from."""
        values = weights_by_name(layer)
        for variable in self.weights:
            name = _compat.weight_name(variable)
            if name in values:
                variable.assign(values[name])

    def source_config(self):
        """The config of the plain Keras layer this one folds back to."""
        config = dict(self.get_config())
        for key in self.conditional_config_keys:
            config.pop(key, None)
        return config

    def folded_weights(self, tradeoff):
        """{weight name: value} of the plain layer that computes what this one does at `tradeoff`."""
        raise NotImplementedError

    @classmethod
    def from_layer(cls, layer, **options):
        """Builds this conditional layer from a built plain Keras layer and copies its weights.

        Args:
          layer: a built instance of `cls.source_class`.
          **options: this class's own arguments (see `conditional_config_keys`).

        Returns:
          A built conditional layer with the same name and configuration. With the
          masks all ones and the noise off it computes what `layer` computes.

        Example:
          >>> dense = keras.layers.Dense(4, name="fc")
          >>> dense.build((None, 3))
          >>> smart_dense = keras_smart.layers.DualMaskDense.from_layer(dense)
          >>> smart_dense.name, [w.name.split("/")[-1].split(":")[0] for w in smart_dense.non_trainable_weights]
          ('fc', ['kernel_clean_mask', 'kernel_adv_mask'])
        """
        if type(layer) is not cls.source_class:  # pylint: disable=unidiomatic-typecheck
            raise TypeError(
                f"{cls.__name__}.from_layer expects a {cls.source_class.__name__} layer. "
                f"Received: {type(layer).__name__} '{layer.name}'"
            )
        if not layer.built:
            raise ValueError(f"Layer '{layer.name}' is not built: call it on an input first.")
        new = cls.from_config({**layer.get_config(), **options})
        new.build_from_config(layer.get_build_config())
        new.copy_source_weights(layer)
        return new

    def to_layer(self, tradeoff):
        """The plain Keras layer that computes what this one does at `tradeoff` (noise folded to
        its expectation).

        Example:
          >>> dense = keras.layers.Dense(4, name="fc")
          >>> dense.build((None, 3))
          >>> smart_dense = keras_smart.layers.DualMaskDense.from_layer(dense)
          >>> type(smart_dense.to_layer(tradeoff=1.0)).__name__
          'Dense'
        """
        layer = self.source_class.from_config(self.source_config())
        layer.build_from_config(self.get_build_config())
        self.assign_folded_to(layer, float(tradeoff))
        return layer

    def assign_folded_to(self, layer, tradeoff):
        """Assigns to the built plain `layer` (a `source_class` instance) the weights folded at `tradeoff`.

        By default `folded_weights(tradeoff)` by short weight name; layers whose
        sublayers repeat weight names (MultiHeadAttention) assign per sublayer.
        """
        assign_weights_by_name(layer, self.folded_weights(tradeoff))


ADV_PREFIX = "adv_"


class PathPairedWeights(ConditionalLayer):
    """Mixin: one copy of each weight in `paired_weights` per path, chosen by lam (normalisation layers).

    The clean path (lam = 0) keeps the Keras layer's own weights and names; the
    adversarial path (every lam > 0) has a copy of each, named with the "adv_"
    prefix, started from the clean value. Routing is by lam, not by input type.
    """

    paired_weights = ()

    def build(self, input_shape):
        super().build(input_shape)
        for name in self.paired_weights:
            clean = getattr(self, name, None)
            if clean is None:  # e.g. center=False: no beta
                continue
            options = dict(_compat.NO_AUTOCAST)  # like the Keras layer's own weights
            if _compat.IS_LEGACY:  # tf_keras keeps batch-norm's moving statistics as ON_READ, MEAN variables
                options.update(synchronization=clean.synchronization, aggregation=clean.aggregation)
            setattr(
                self,
                ADV_PREFIX + name,
                self.add_weight(
                    name=ADV_PREFIX + name,
                    shape=tuple(clean.shape),
                    initializer=_compat.keras.initializers.Constant(0.0),
                    trainable=clean.trainable,
                    **options,
                ),
            )
            getattr(self, ADV_PREFIX + name).assign(clean)

    def _routed(self, name, a):
        """The clean value of weight `name` at a = 0, the adversarial one at a = 1 (float32); None if absent."""
        clean = getattr(self, name, None)
        if clean is None:
            return None
        adv = getattr(self, ADV_PREFIX + name)
        return (1.0 - a) * tf.cast(clean, tf.float32) + a * tf.cast(adv, tf.float32)

    def copy_source_weights(self, layer):
        """Both paths start from the plain layer's weights."""
        values = weights_by_name(layer)
        for name in self.paired_weights:
            if name in values:
                getattr(self, name).assign(values[name])
                getattr(self, ADV_PREFIX + name).assign(values[name])

    def folded_weights(self, tradeoff):
        values = weights_by_name(self)
        prefix = ADV_PREFIX if tradeoff > 0 else ""
        return {name: values[prefix + name] for name in self.paired_weights if name in values}
