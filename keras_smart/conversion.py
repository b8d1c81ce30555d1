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
from keras_smart import compaction
from keras_smart import config as config_lib
from keras_smart import registry
from keras_smart import training
from keras_smart import validation
from keras_smart.layers import base

keras = _compat.keras


class UnconvertedLayersWarning(UserWarning):
    """Layers with weights that `convert` left plain: they compute the same on both paths."""


def convert(model, method="smart", skip=None, **options):
    """Clones a Keras model into a `SmartModel` whose layers are conditional on the trade-off.

    Swaps the method's Keras classes (exact classes, also inside nested models)
    for conditional layers and clones every other layer as is. smart, float and
    floats swap Conv1D, Conv2D (any `groups`), Conv3D, Conv2DTranspose,
    DepthwiseConv2D, SeparableConv2D, Dense, EinsumDense, MultiHeadAttention,
    BatchNormalization and LayerNormalization; oat swaps the normalisation
    layers. Right after `convert` the masks are all ones, so at trade-off 0 the
    model computes exactly what `model` does. One `UnconvertedLayersWarning`
    lists the layers with weights that stay plain (skipped ones, and layers
    with no conditional version such as LSTM or Embedding), with their share of
    the model's weights.

    Args:
      model: a built Functional or Sequential `keras.Model` (keras.applications
        models included). Not modified.
      method: "smart" (dual binary masks + dual batch-norm), "float"
        (lam-scaled learnable weight noise + dual batch-norm), "floats" (float +
        one binary mask) or "oat" (FiLM after every batch-norm + dual
        batch-norm).
      skip: layers to keep plain: a list of layer names (a nested model's name
        keeps all of its layers plain) or a predicate `skip(layer) -> bool`.
      **options: the conditional layers' own arguments: `tradeoff_mode`
        ("switch" | "blend" | "noise", smart), `noise_init` and `seed` (float,
        floats, smart's noise mode), `film_encoding`, `film_tradeoffs`,
        `film_code_size` (oat).

    Returns:
      A `SmartModel` with the same inputs, outputs and layer names, at trade-off 0.

    Raises:
      TypeError: `model` is not a Keras model, or is a subclassed model.
      ValueError: unknown method or option, an unknown layer name in `skip`, an
        unbuilt model, a model that is already converted (convert is not
        idempotent: `strip` it first), or a layer configuration the conditional
        layers do not support (the message names the layer and `skip=`).

    Example:
      >>> base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10)
      >>> smart = keras_smart.convert(base, method="smart")
      >>> keras_smart.set_tradeoff(smart, 1.0)
      >>> type(smart.get_layer("Conv1")).__name__, type(smart.get_layer("bn_Conv1")).__name__
      ('DualMaskConv2D', 'DualBatchNormalization')
      >>> import warnings
      >>> with warnings.catch_warnings(record=True) as caught:  # the skipped head is reported
      ...     head_plain = keras_smart.convert(base, method="smart", skip=["predictions"])
      >>> type(head_plain.get_layer("predictions")).__name__, caught[0].category.__name__
      ('Dense', 'UnconvertedLayersWarning')
    """
    method = config_lib.coerce_enum(config_lib.Method, method, "method")
    options = registry.renamed_options(options)
    registry.check_options(method, options)
    _check_convertible(model)
    skipped = skip_predicate(model, skip)
    swaps = registry.SWAPS[method]
    seeds = itertools.count()

    def to_conditional(layer, entry):
        conditional_class = swaps.get(type(layer))
        if conditional_class is None or skipped(layer):
            return entry
        conditional_class.check_source(layer)
        layer_options = registry.layer_options(method, conditional_class, options)
        if "seed" in conditional_class.conditional_config_keys and options.get("seed") is not None:
            layer_options["seed"] = options["seed"] + next(seeds)  # distinct noise per layer
        return retarget_entry(entry, conditional_class, {**entry["config"], **layer_options})

    converted = rebuild(model, to_conditional, training.SmartModel)
    copy_weights(model, converted, lambda source, target: target.copy_source_weights(source))
    _warn_unconverted(converted, method, source=model)
    return converted


def strip(model, tradeoff=None, compact=False):
    """Folds a SmartModel at one trade-off into a plain Keras model (same layer names).

    Masks are multiplied into the kernels, the batch-norm set of the chosen path
    is kept, FiLM is folded into the batch-norm's scale and shift, and weight
    noise is replaced by its expectation (zero). Layers that are not
    conditional are kept as they are, `keras_smart.noise`'s NoiseInjection
    layers included. The result computes what the
    SmartModel computes at `tradeoff` (for noisy methods: inside
    `keras_smart.layers.expected_noise()`).

    With `compact=True` the plain model is then made physically narrower
    (`keras_smart.compaction.compact`): every output channel the masks drop at
    `tradeoff` is removed from its kernel layer, from the batch-norm and other
    per-channel layers it flows through and from the next kernel layer's input,
    wherever that leaves the outputs unchanged; a dropped channel's constant
    (its bias through batch-norm and activation) goes into the next layer's
    bias. Channels that reach an addition, a concatenation or a model output
    are kept; of those with a non-zero constant before a zero-padded
    convolution, one is kept and carries the others. The result computes what
    the SmartModel computes at `tradeoff` (to float round-off).

    Args:
      model: a `SmartModel`.
      tradeoff: a number in [0, 1]; None uses the model's current trade-off.
      compact: remove the dropped output channels (the masks used at
        `tradeoff` must keep or drop whole channels).

    Returns:
      A Functional `keras.Model` made of plain Keras layers.

    Raises:
      TypeError: `model` is not a SmartModel.
      ValueError: a trade-off outside [0, 1]; with `compact=True`, a model
        without masks, or masks that mix zeros and ones inside an output
        channel (the message names the layer; design channel masks with
        `keras_smart.design_masks(model, ..., granularity="channel")`).

    Example:
      >>> plain = keras_smart.strip(smart, tradeoff=1.0)
      >>> type(plain.get_layer("conv")).__name__, type(plain.get_layer("bn")).__name__
      ('Conv2D', 'BatchNormalization')
      >>> np.allclose(plain(x[:4]), smart(x[:4]), atol=1e-5)
      True
      >>> keras_smart.strip(smart, tradeoff=1.0, compact=True).get_layer("conv").filters  # all-ones masks
      8
    """
    smart = _smart_model(model, "strip")
    tradeoff = get_tradeoff(smart) if tradeoff is None else validation.check_tradeoff(tradeoff)
    if validation.check_bool(compact, "compact"):
        compaction.check_channel_structured(smart, tradeoff)

    def to_plain(layer, entry):
        if not isinstance(layer, base.ConditionalLayer):
            return entry
        return retarget_entry(entry, layer.source_class, layer.source_config(), builtin=True)

    plain = rebuild(smart, to_plain, keras.Model)
    copy_weights(
        smart,
        plain,
        lambda source, target: source.assign_folded_to(target, tradeoff),
    )
    return compaction.compact(plain) if compact else plain


def set_tradeoff(model, tradeoff=validation.UNSET, *, lam=validation.UNSET):
    """Sets the model's trade-off: 0 = clean path, 1 = most robust. No retrace, no rebuild.

    Args:
      model: a `SmartModel`.
      tradeoff: a real number in [0, 1].
      lam: the old name of `tradeoff`; works for one more release, with a DeprecationWarning.

    Raises:
      TypeError: `model` is not a SmartModel, or `tradeoff` is not a real number.
      ValueError: `tradeoff` is NaN or outside [0, 1].

    Example:
      >>> keras_smart.set_tradeoff(smart, 0.4)
      >>> round(keras_smart.get_tradeoff(smart), 6)
      0.4
    """
    tradeoff = validation.renamed_argument("set_tradeoff", "lam", lam, "tradeoff", tradeoff, validation.UNSET)
    smart = _smart_model(model, "set_tradeoff")
    if tradeoff is validation.UNSET:
        raise TypeError("`set_tradeoff` needs the trade-off, a number in [0, 1]: set_tradeoff(model, 0.5).")
    smart.tradeoff_variable.assign(validation.check_tradeoff(tradeoff))


def get_tradeoff(model):
    """The model's current trade-off, as a Python float.

    Example:
      >>> keras_smart.get_tradeoff(keras_smart.convert(cnn, "smart"))
      0.0
    """
    return float(_smart_model(model, "get_tradeoff").tradeoff_variable.numpy())


def clone(model):
    """A copy of a Functional or Sequential model (a SmartModel stays one), rebuilt from its config.

    The same rebuild and by-name weight copy as `convert`, with no layer
    swapped: a Sequential comes back as a Functional model, a SmartModel with
    its own trade-off variable holding the same value. `model` is not modified.

    Example:
      >>> twin = keras_smart.conversion.clone(smart)
      >>> twin is smart, type(twin).__name__, np.allclose(twin(x[:2]), smart(x[:2]))
      (False, 'SmartModel', True)
    """
    model_class = training.SmartModel if isinstance(model, training.SmartModel) else keras.Model
    twin = rebuild(model, lambda layer, entry: entry, model_class)
    copy_weights(model, twin, lambda source, target: target.set_weights(source.get_weights()))
    if isinstance(twin, training.SmartModel):
        twin.tradeoff_variable.assign(model.tradeoff_variable)
    return twin


# --- helpers --------------------------------------------------------------------------------------


def _smart_model(model, caller):
    if not isinstance(model, training.SmartModel):
        raise TypeError(
            f"`{caller}` expects a SmartModel (what keras_smart.convert returns). "
            f"Received: {type(model).__name__}. Call keras_smart.convert(model) first."
        )
    return model


def _other_flavour(obj):
    """"Keras 3" / "tf_keras" if `obj` is a Keras object of the flavour this process does not run."""
    modules = {cls.__module__.split(".")[0] for cls in type(obj).__mro__}
    other = "keras" if _compat.IS_LEGACY else "tf_keras"
    if other in modules:
        return "Keras 3" if other == "keras" else "tf_keras"
    return None


def _check_convertible(model):
    other = _other_flavour(model)
    if other is not None:
        active = "tf_keras" if _compat.IS_LEGACY else "Keras 3"
        fix = (
            "Build it with `import tf_keras as keras` (or `from keras_smart import keras`), or unset "
            "TF_USE_LEGACY_KERAS before TensorFlow is imported."
            if _compat.IS_LEGACY
            else "Build it with `import keras` (or `from keras_smart import keras`), or set "
            "TF_USE_LEGACY_KERAS=1 before TensorFlow is imported to run tf_keras."
        )
        raise TypeError(
            f"`convert` received a {other} model ('{getattr(model, 'name', '?')}', "
            f"{type(model).__name__}), but keras_smart runs {active} in this process "
            f"(it follows TF_USE_LEGACY_KERAS, read when TensorFlow was imported). {fix}"
        )
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


def retarget_entry(entry, cls, layer_config, builtin=False):
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


def rebuild(model, rewrite_entry, model_class, transform=None):
    """A new model of `model_class` from `model`'s config with its layer entries rewritten (then transformed)."""
    config = _rewrite(_model_config(model), model, rewrite_entry)
    if transform is not None:
        config = transform(config)
    # Only classes Keras cannot find by itself: a user's unregistered layers and ours. Scoping a
    # built-in name (e.g. "Add") would shadow the op of the same name that `x + 3.0` records.
    objects = {
        type(l).__name__: type(l)
        for l in _compat.flatten_layers(model)
        if not _compat.is_builtin_layer_class(type(l))
    }
    objects.update(registry.custom_objects())
    objects["SmartModel"] = training.SmartModel
    objects.update(_live_lambdas(model, config))
    with _compat.custom_object_scope(objects):
        if _compat.is_sequential(model):
            sequential = keras.Sequential.from_config(config)
            # A Sequential has one input and one output: pass tensors, not lists of one.
            return model_class(inputs=sequential.inputs[0], outputs=sequential.outputs[0], name=model.name)
        return model_class.from_config(config)


def _live_lambdas(model, config):
    """Points every Lambda entry of `config` at a class that rebuilds it around its live function.

    A Lambda's config holds its function as bytecode, which Keras refuses to
    load by default and which loses the function's globals (a lambda that calls
    `tf.cast` no longer finds `tf`). The clone reuses the function object of
    the model in memory instead. Returns the {class name: class} to scope.
    """
    live = {l.name: l for l in _compat.flatten_layers(model) if type(l) is keras.layers.Lambda}
    if not live:
        return {}

    class LiveLambda(keras.layers.Lambda):  # pylint: disable=missing-class-docstring
        @classmethod
        def from_config(cls, layer_config, custom_objects=None):
            del custom_objects
            source = live[layer_config["name"]]
            base_options = {k: layer_config[k] for k in ("name", "trainable", "dtype") if k in layer_config}
            return keras.layers.Lambda(
                source.function,
                output_shape=_compat.lambda_output_shape(source),
                mask=source.mask,
                arguments=source.arguments,
                **base_options,
            )

    def point(entries):
        for entry in entries:
            if entry.get("class_name") == "Lambda" and entry["config"].get("name") in live:
                entry.update(class_name="KerasSmartLiveLambda", module=None, registered_name="KerasSmartLiveLambda")
            elif isinstance(entry.get("config"), dict) and "layers" in entry["config"]:
                point(entry["config"]["layers"])

    point(config["layers"])
    return {"KerasSmartLiveLambda": LiveLambda}


def copy_weights(source_model, target_model, copy_conditional=None, rename=None):
    """Copies weights layer by layer, matched by name, into nested models.

    Where one side of a pair is a conditional layer (the target in `convert`,
    the source in `strip`), `copy_conditional(source, target)` does the copy
    (None: the same weights, as for plain layers). `rename(source layer name)`
    gives the target's name of a source layer (None: the same name); target
    layers with no source keep their weights.
    """
    sources = {(rename(layer.name) if rename else layer.name): layer for layer in source_model.layers}
    for target in target_model.layers:
        source = sources.get(target.name)
        if source is None or not (source.weights or isinstance(target, keras.Model)):
            continue
        if isinstance(target, keras.Model):
            copy_weights(source, target, copy_conditional, rename)
        elif copy_conditional is None:
            target.set_weights(source.get_weights())
        elif isinstance(target, base.ConditionalLayer) or isinstance(source, base.ConditionalLayer):
            copy_conditional(source, target)
        else:
            target.set_weights(source.get_weights())


def skip_predicate(model, skip):
    """`skip` (None, layer names or a predicate) as a predicate on layers; unknown names raise."""
    if skip is None:
        return lambda layer: False
    if callable(skip):
        return lambda layer: bool(skip(layer))
    names = [skip] if isinstance(skip, str) else skip
    if not all(isinstance(n, str) for n in names):
        raise TypeError(
            "`skip` must be a list of layer names or a predicate `skip(layer) -> bool`. "
            f"Received: {skip!r}"
        )
    known = {l.name: l for l in _compat.flatten_layers(model)}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"`skip` names no layer of model '{model.name}': {unknown}. Its layers: {sorted(known)}")
    skipped = set(names)
    for name in names:  # a nested model's name skips everything inside it
        if isinstance(known[name], keras.Model):
            skipped.update(l.name for l in _compat.flatten_layers(known[name]))
    return lambda layer: layer.name in skipped


def _warn_unconverted(model, method, source):
    """One warning listing the layers with weights left plain, and their share of `source`'s weights.

    OAT conditions only its normalisation layers by design: its other layers
    are not listed.
    """
    plain = list(base.plain_weight_layers(model))
    if method == config_lib.Method.OAT:
        plain = [l for l in plain if isinstance(l, tuple(registry.SWAPS[method]))]
    if not plain:
        return
    total = max(source.count_params(), 1)
    listed = ", ".join(
        f"{l.name} ({type(l).__name__}, {100.0 * l.count_params() / total:.1f}% of the weights)" for l in plain
    )
    warnings.warn(
        f"{len(plain)} layer(s) with weights stay plain and compute the same on both paths: {listed}. "
        "keras_smart converts the exact Keras classes it has conditional versions of "
        f"({sorted(c.__name__ for c in registry.SWAPS[method])}); subclasses, wrapped and custom layers, "
        "and layers passed in `skip` are cloned as they are. count_nonzero reports their weights as "
        "`unconverted`.",
        UnconvertedLayersWarning,
        stacklevel=3,
    )

