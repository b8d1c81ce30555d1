"""convert(), strip(), set_tradeoff(), get_tradeoff(): into and out of a SmartModel.

Both directions are clones built from the model's config: layer entries of the
swapped Keras classes are rewritten to their conditional counterparts (or back),
Keras rebuilds the graph (shared layers, nested models, several inputs and
outputs included), and weights are copied layer by layer, by name. The model
passed in is never modified.
"""

import copy
import itertools
import warnings

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart import registry
from keras_smart import training
from keras_smart.layers import base

keras = _compat.keras

def convert(model, method="smart", **options):
    """Clones a Keras model into a `SmartModel` whose layers are conditional on the trade-off.

    Swaps Conv2D, DepthwiseConv2D, SeparableConv2D, Dense and BatchNormalization
    (exact classes, also inside nested models) for the method's conditional
    layers; clones every other layer as is. Right after `convert` the masks are
    all ones, so at trade-off 0 the model computes exactly what `model` does.

    Args:
      model: a built Functional or Sequential `keras.Model` (keras.applications
        models included). Not modified.
      method: "smart" (dual binary masks + dual batch-norm), "float"
        (lam-scaled learnable weight noise + dual batch-norm), "floats" (float +
        one binary mask) or "oat" (FiLM after every batch-norm + dual
        batch-norm).
      **options: the conditional layers' own arguments: `tradeoff_mode`
        ("switch" | "blend" | "noise", smart), `noise_init` and `seed` (float,
        floats, smart's noise mode), `film_encoding`, `film_lambdas`,
        `film_code_size` (oat).

    Returns:
      A `SmartModel` with the same inputs, outputs and layer names, at trade-off 0.

    Raises:
      TypeError: `model` is not a Keras model, or is a subclassed model.
      ValueError: unknown method or option, an unbuilt model, a model that is
        already converted (convert is not idempotent: `strip` it first), or a
        layer configuration the conditional layers do not support.

    Example:
      >>> base = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
      >>> smart = keras_smart.convert(base, method="smart")
      >>> keras_smart.set_tradeoff(smart, 1.0)
    """
    method = config_lib.coerce_enum(config_lib.Method, method, "method")
    registry.check_options(method, options)
    _check_convertible(model)
    swaps = registry.SWAPS[method]
    seeds = itertools.count()

    def to_conditional(layer, entry):
        conditional_class = swaps.get(type(layer))
        if conditional_class is None:
            return entry
        conditional_class.check_source(layer)
        layer_options = registry.layer_options(method, conditional_class, options)
        if "seed" in conditional_class.conditional_config_keys and options.get("seed") is not None:
            layer_options["seed"] = options["seed"] + next(seeds)  # distinct noise per layer
        return _retarget_entry(entry, conditional_class, {**entry["config"], **layer_options})

    converted = _rebuild(model, to_conditional, training.SmartModel)
    _copy_weights(model, converted, lambda source, target: target.copy_source_weights(source))
    _warn_unconverted(converted, swaps)
    return converted


def strip(model, tradeoff=None):
    """Folds a SmartModel at one trade-off into a plain Keras model (same layer names).

    Masks are multiplied into the kernels, the batch-norm set of the chosen path
    is kept, FiLM is folded into the batch-norm's scale and shift, and weight
    noise is replaced by its expectation (zero). The result computes what the
    SmartModel computes at `tradeoff` (for noisy methods: inside
    `keras_smart.layers.expected_noise()`).

    Args:
      model: a `SmartModel`.
      tradeoff: lam in [0, 1]; None uses the model's current trade-off.

    Returns:
      A Functional `keras.Model` made of plain Keras layers.

    Example:
      >>> plain = keras_smart.strip(smart, tradeoff=1.0)
    """
    smart = _smart_model(model, "strip")
    tradeoff = get_tradeoff(smart) if tradeoff is None else config_lib.check_tradeoff(tradeoff, "tradeoff")

    def to_plain(layer, entry):
        if not isinstance(layer, base.ConditionalLayer):
            return entry
        return _retarget_entry(entry, layer.source_class, layer.source_config(), builtin=True)

    plain = _rebuild(smart, to_plain, keras.Model)
    _copy_weights(
        smart,
        plain,
        lambda source, target: base.assign_weights_by_name(target, source.folded_weights(tradeoff)),
    )
    return plain


def set_tradeoff(model, lam):
    """Sets the model's trade-off: 0 = clean path, 1 = most robust. No retrace, no rebuild.

    Args:
      model: a `SmartModel`.
      lam: a real number in [0, 1].

    Raises:
      TypeError: `model` is not a SmartModel, or `lam` is not a real number.
      ValueError: `lam` is NaN or outside [0, 1].

    Example:
      >>> keras_smart.set_tradeoff(smart, 0.4)
    """
    smart = _smart_model(model, "set_tradeoff")
    smart.tradeoff_variable.assign(config_lib.check_tradeoff(lam))


def get_tradeoff(model):
    """The model's current trade-off lam, as a Python float.

    Example:
      >>> keras_smart.get_tradeoff(smart)
      0.0
    """
    return float(_smart_model(model, "get_tradeoff").tradeoff_variable.numpy())


# --- helpers --------------------------------------------------------------------------------------


def _smart_model(model, caller):
    if not isinstance(model, training.SmartModel):
        raise TypeError(
            f"`{caller}` expects a SmartModel (what keras_smart.convert returns). "
            f"Received: {type(model).__name__}. Call keras_smart.convert(model) first."
        )
    return model


def _check_convertible(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`convert` expects a keras.Model (Functional or Sequential). "
            f"Received: {type(model).__name__}"
            + (" (a single layer: wrap it in a model first)" if isinstance(model, keras.layers.Layer) else "")
        )
    if isinstance(model, training.SmartModel) or any(
        isinstance(l, base.ConditionalLayer) for l in _compat.flatten_layers(model)
    ):
        raise ValueError(
            f"Model '{model.name}' is already converted (it has conditional layers). convert is not "
            "idempotent: use it as is, or call keras_smart.strip(model) first to get a plain model "
            "and convert that."
        )
    _check_graph_model(model, model.name)
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not model.built or not inputs:
        raise ValueError(
            f"Model '{model.name}' is not built: it has no defined input. Start it with "
            "keras.Input(shape=...) (or call model.build(input_shape)) before convert."
        )


def _check_graph_model(model, outer_name):
    if not _compat.is_functional(model):
        where = "" if model.name == outer_name else f" (nested in '{outer_name}')"
        raise TypeError(
            f"Model '{model.name}'{where} is a subclassed model ({type(model).__name__}); convert "
            "needs a graph it can clone. Ways forward: rebuild it with the Functional API "
            "(keras.Input -> layers -> keras.Model) or as a keras.Sequential; or convert the "
            "Functional parts it is made of."
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _check_graph_model(layer, outer_name)


def _model_config(model):
    try:
        return copy.deepcopy(model.get_config())
    except NotImplementedError:
        for layer in _compat.flatten_layers(model):
            try:
                layer.get_config()
            except NotImplementedError:
                raise TypeError(
                    f"Layer '{layer.name}' ({type(layer).__name__}) does not implement get_config(), "
                    "and convert clones every layer from its config. Ways forward: implement "
                    "get_config() (returning its constructor arguments) in that layer class."
                ) from None
        raise


def _retarget_entry(entry, cls, layer_config, builtin=False):
    """A layer entry of a model config, pointed at `cls` with `layer_config`."""
    entry = dict(entry)
    entry["class_name"] = cls.__name__
    entry["config"] = layer_config
    if "module" in entry:
        entry["module"] = "keras.layers" if builtin else cls.__module__
    if "registered_name" in entry:
        entry["registered_name"] = None if builtin else f"keras_smart>{cls.__name__}"
    return entry


def _rewrite(config, model, rewrite_entry):
    """Applies `rewrite_entry(layer, entry)` to every layer entry of `config`, into nested models."""
    layers_by_name = {layer.name: layer for layer in model.layers}
    entries = []
    for entry in config["layers"]:
        layer = layers_by_name.get(entry.get("config", {}).get("name", entry.get("name")))
        if layer is None:  # input layers
            entries.append(entry)
        elif isinstance(layer, keras.Model):
            entry = dict(entry)
            entry["config"] = _rewrite(copy.deepcopy(entry["config"]), layer, rewrite_entry)
            entries.append(entry)
        else:
            entries.append(rewrite_entry(layer, entry))
    return {**config, "layers": entries}


def _rebuild(model, rewrite_entry, model_class):
    """A new model of `model_class` from `model`'s config with its layer entries rewritten."""
    config = _rewrite(_model_config(model), model, rewrite_entry)
    objects = {type(l).__name__: type(l) for l in _compat.flatten_layers(model)}
    objects.update(registry.custom_objects())
    objects["SmartModel"] = training.SmartModel
    with _compat.custom_object_scope(objects):
        if _compat.is_sequential(model):
            sequential = keras.Sequential.from_config(config)
            # A Sequential has one input and one output: pass tensors, not lists of one.
            return model_class(inputs=sequential.inputs[0], outputs=sequential.outputs[0], name=model.name)
        return model_class.from_config(config)


def _copy_weights(source_model, target_model, copy_conditional):
    """Copies weights layer by layer, matched by name, into nested models.

    Where one side of a pair is a conditional layer (the target in `convert`,
    the source in `strip`), `copy_conditional(source, target)` does the copy.
    """
    sources = {layer.name: layer for layer in source_model.layers}
    for target in target_model.layers:
        source = sources.get(target.name)
        if source is None or not (source.weights or isinstance(target, keras.Model)):
            continue
        if isinstance(target, keras.Model):
            _copy_weights(source, target, copy_conditional)
        elif isinstance(target, base.ConditionalLayer) or isinstance(source, base.ConditionalLayer):
            copy_conditional(source, target)
        else:
            target.set_weights(source.get_weights())


def _warn_unconverted(model, swaps):
    """Warns about swappable layers that kept plain weights (subclasses, wrappers, custom layers)."""
    plain = [
        f"{l.name} ({type(l).__name__})"
        for l in _compat.flatten_layers(model)
        if isinstance(l, tuple(swaps)) and not isinstance(l, base.ConditionalLayer)
    ]
    if plain:
        warnings.warn(
            f"These layers were cloned as they are and stay the same on both paths: {plain}. "
            f"convert swaps the exact Keras classes {sorted(c.__name__ for c in swaps)}; "
            "subclasses and layers inside wrappers or custom layers are not swapped.",
            stacklevel=3,
        )
