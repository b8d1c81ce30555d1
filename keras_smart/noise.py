"""EnResNet: noise injected after residual additions (`inject_noise`), and ensembles averaging logits (`ensemble`).

Both build new models from the input models' configs (the same rebuild as
`convert`): the models passed in are never modified, weights are copied, and a
SmartModel comes back a SmartModel at the same trade-off.
"""

import difflib
import itertools

from keras_smart import _compat
from keras_smart import conversion
from keras_smart import training
from keras_smart import validation
from keras_smart.exits import structure
from keras_smart.layers import noise_injection

keras = _compat.keras

# tf_keras records `x + y` on symbolic tensors as a TFOpLambda running one of these.
_TF_ADD_FUNCTIONS = ("__operators__.add", "math.add")


def inject_noise(model, sigma=0.1, after=None, seed=None):
    """A copy of `model` with a `NoiseInjection(sigma)` layer after each residual addition (EnResNet).

    With `after=None` the noise goes after every addition of two or more
    tensors: `keras.layers.Add` layers and, in Keras 3, `x + y` of two tensors
    (tf_keras: the TFOpLambda `x + y` records), also inside nested models;
    `x + 3.0` (one tensor and a constant) is not a residual addition. Each
    noise layer is named after the layer it follows ("<name>_noise") and takes
    that layer's place as input of every layer (and model output) that read it.
    The noise is on at inference too; `keras_smart.layers.expected_noise()`
    turns it off (export computes that), and `evaluate_tradeoff` evaluates such
    a model with EOT at every trade-off.

    Args:
      model: a built Functional or Sequential `keras.Model` or SmartModel. Not modified.
      sigma: the noise's std in units of the per-example std of the layer's
        output, a finite real number >= 0 (EnResNet: 0.1).
      after: None (every residual addition) or a list of layer names (nested
        models' layers included) to put noise after.
      seed: None (each layer's noise follows TensorFlow's seed rules) or an
        int: the noise layers get seeds seed, seed + 1, ... in graph order.

    Returns:
      A new model with the same weights (a SmartModel at `model`'s trade-off
      for a SmartModel, else a Functional model).

    Raises:
      TypeError: `model` is not a built Functional/Sequential Keras model,
        `after` is not a list of names, bad `sigma` / `seed` types.
      ValueError: `sigma` < 0 or NaN; a name in `after` that is no layer of
        the model, or a layer with several outputs; `after=None` on a model
        with no residual addition, or one that already has noise layers.

    Example:
      >>> noisy = inject_noise(cnn, sigma=0.1, after=["conv"], seed=0)
      >>> [layer.name for layer in noisy.layers][1:3]
      ['conv', 'conv_noise']
      >>> with keras_smart.layers.expected_noise():  # at its expectation the noise is off
      ...     same = np.allclose(noisy(x[:2]), cnn(x[:2]))
      >>> same
      True
    """
    sigma = noise_injection.check_sigma(sigma)
    seed = validation.check_seed(seed, allow_none=True)
    _check_graph_model(model, "inject_noise")
    names = _check_after(after)
    if names is None:
        _check_not_noisy(model)
    seeds = None if seed is None else itertools.count(seed)

    def noise_entry(name):
        layer = noise_injection.NoiseInjection(sigma=sigma, seed=None if seeds is None else next(seeds), name=name)
        return dict(keras.layers.serialize(layer))

    def transform(config):
        targets = _targets(config, model, names)
        return _inject(config, targets, noise_entry, taken=set(_all_names(config)) | {model.name})

    model_class = training.SmartModel if isinstance(model, training.SmartModel) else keras.Model
    noisy = conversion.rebuild(model, _unchanged, model_class, transform=transform)
    conversion.copy_weights(model, noisy)
    if isinstance(noisy, training.SmartModel):
        noisy.tradeoff_variable.assign(model.tradeoff_variable)
    return noisy


def ensemble(models, name="ensemble"):
    """One model whose output is the mean of the members' outputs (logits): EnResNet's ensemble.

    Each member is cloned (same weights; the models passed in are not
    modified) into a nested Functional model "member_1", "member_2", ... whose
    layers are renamed "member_<k>_<name>", so that no two layers share a name.
    All members read the one input. If any member is a SmartModel the ensemble
    is a SmartModel whose one trade-off variable every member's conditional
    layers read (starting at the first SmartModel member's trade-off); else a
    Functional model. It trains (`fit`), saves and loads (`.keras`), and exports
    (`keras_smart.export.to_tflite`, with noise layers at their expectation).

    Args:
      models: a non-empty list of built Functional or Sequential Keras models
        (or SmartModels), each with one input and one output, all with the same
        input shape and the same output shape.
      name: the ensemble model's name.

    Returns:
      The ensemble model.

    Raises:
      TypeError: `models` is not a list or tuple of Keras models, a member is
        a subclassed model, `name` is not a string.
      ValueError: `models` is empty; a member is not built, has several inputs
        or outputs, or the members' input or output shapes differ; `name` is empty.

    Example:
      >>> both = ensemble([cnn, cnn])
      >>> [layer.name for layer in both.layers][1:3]
      ['member_1', 'member_2']
      >>> np.allclose(both(x[:2]), cnn(x[:2]), atol=1e-5)
      True
    """
    members = _check_members(models)
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string. Received: name={name!r} of type {type(name).__name__}")
    if not name:
        raise ValueError("`name` must be a non-empty string, the ensemble model's name. Received: name=''")
    clones = [_renamed_member(model, f"member_{k}") for k, model in enumerate(members, start=1)]
    source_input = members[0].inputs[0]
    x = keras.Input(shape=tuple(source_input.shape[1:]), dtype=source_input.dtype, name="input")
    outputs = [_single(member(x)) for member in clones]
    output = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="average")(outputs)
    smart = [m for m in members if isinstance(m, training.SmartModel)]
    if not smart:
        return keras.Model(x, output, name=name)
    combined = training.SmartModel(x, output, name=name)  # binds every member's conditional layers
    combined.tradeoff_variable.assign(smart[0].tradeoff_variable)
    return combined


def _single(output):
    """A member's one output tensor (a model built with `outputs=[tensor]` returns a list of one)."""
    return output[0] if isinstance(output, (list, tuple)) else output


# --- checks ---------------------------------------------------------------------------------------


def _check_graph_model(model, caller, what="`model`"):
    if not isinstance(model, keras.Model) or not _compat.is_functional(model):
        kind = type(model).__name__
        raise TypeError(
            f"`{caller}` expects a Functional or Sequential keras.Model (or a SmartModel) of the active Keras "
            f"flavour as {what}. Received: {kind}"
            + (" (a subclassed model: rebuild it with the Functional API)" if isinstance(model, keras.Model) else "")
        )
    try:
        tensors = model.inputs, model.outputs
    except (AttributeError, ValueError):
        tensors = None, None
    if not all(tensors):
        raise ValueError(f"Model '{model.name}' is not built: start it with keras.Input(shape=...) before `{caller}`.")


def _check_after(after):
    if after is None:
        return None
    names = [after] if isinstance(after, str) else after
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"`after` must be None or a non-empty list of layer names. Received: after={after!r}")
    return list(dict.fromkeys(names))


def _check_not_noisy(model):
    noisy = [l.name for l in _compat.flatten_layers(model) if isinstance(l, noise_injection.NoiseInjection)]
    if noisy:
        raise ValueError(
            f"Model '{model.name}' already has NoiseInjection layers: {noisy}. inject_noise(after=None) would add "
            "a second one after each addition: inject into the model without noise, or pass `after=` to add more."
        )


def _check_members(models):
    if isinstance(models, keras.Model) or not isinstance(models, (list, tuple)):
        raise TypeError(f"`models` must be a list of Keras models. Received: {type(models).__name__}")
    if not models:
        raise ValueError("`models` is empty: an ensemble needs at least one model.")
    for k, model in enumerate(models):
        _check_graph_model(model, "ensemble", what=f"models[{k}]")
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                f"Each ensemble member needs one input and one output (the logits); models[{k}] '{model.name}' has "
                f"{len(model.inputs)} input(s) and {len(model.outputs)} output(s)."
            )
    for kind in ("input", "output"):
        shapes = [tuple(getattr(m, f"{kind}s")[0].shape[1:]) for m in models]
        if len(set(shapes)) > 1:
            listed = ", ".join(f"'{m.name}': {(None,) + s}" for m, s in zip(models, shapes))
            raise ValueError(f"Ensemble members must share one {kind} shape; their {kind} shapes are: {listed}.")
    return list(models)


# --- config surgery -------------------------------------------------------------------------------


def _unchanged(layer, entry):
    del layer
    return entry


def _entry_name(entry):
    return entry.get("config", {}).get("name", entry.get("name"))


def _nested_config(entry):
    """The config of a nested model's entry (it holds "layers"), else None."""
    inner = entry.get("config")
    return inner if isinstance(inner, dict) and isinstance(inner.get("layers"), list) else None


def _entries(config):
    """Every layer entry of a model config, nested models' entries included (each after its model's)."""
    for entry in config.get("layers", []):
        yield entry
        inner = _nested_config(entry)
        if inner is not None:
            yield from _entries(inner)


def _all_names(config):
    return [_entry_name(entry) for entry in _entries(config)]


def _is_residual_addition(entry):
    """An addition (Add layer, Keras 3 `x + y`, tf_keras TFOpLambda add) of two or more tensors at every call."""
    kind = entry.get("class_name")
    function = entry.get("config", {}).get("function")
    if kind != "Add" and not (kind == "TFOpLambda" and function in _TF_ADD_FUNCTIONS):
        return False
    nodes = entry.get("inbound_nodes") or []
    return bool(nodes) and all(len(list(structure.layer_references(nodes, i))) >= 2 for i in range(len(nodes)))


def _targets(config, model, names):
    """The names of the entries to put noise after: `names` checked, or every residual addition."""
    known = _all_names(config)
    if names is None:
        found = [_entry_name(e) for e in _entries(config) if _is_residual_addition(e)]
        if not found:
            raise ValueError(
                f"Model '{model.name}' has no residual addition (Add layer or `x + y` of two tensors) to put noise "
                "after. Name the layers instead: inject_noise(model, after=['layer_name', ...])."
            )
        return set(found)
    unknown = [n for n in names if n not in known]
    if unknown:
        near = sorted({m for n in unknown for m in difflib.get_close_matches(n, known, n=3, cutoff=0.5)})
        listed = f"similar names: {near}" if near else f"its layers: {known[:30]}" + (" ..." if len(known) > 30 else "")
        raise ValueError(
            f"`after` names no layer of model '{model.name}': {unknown}; {listed}. model.summary() lists every "
            "layer name."
        )
    return set(names)


def _unique(name, taken):
    candidate, k = name, 0
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(candidate)
    return candidate


def _inject(config, targets, noise_entry, taken):
    """`config` with a noise entry after each entry named in `targets`, read in its place (into nested models)."""
    layers, redirect, added = [], {}, set()
    for entry in config["layers"]:
        inner = _nested_config(entry)
        if inner is not None:
            entry["config"] = _inject(inner, targets, noise_entry, taken)
        layers.append(entry)
        name = _entry_name(entry)
        if name not in targets:
            continue
        noise_name = _unique(f"{name}_noise", taken)
        new = noise_entry(noise_name)
        if "input_layers" in config:  # Functional: the noise reads each call of the layer
            calls = max(1, len(entry.get("inbound_nodes") or []))
            new.update(name=noise_name, inbound_nodes=[[[name, node, 0, {}]] for node in range(calls)])
        layers.append(new)
        redirect[name], added = noise_name, added | {noise_name}
    config["layers"] = layers
    if "input_layers" not in config:  # Sequential: the order is the graph
        return config
    references = list(structure.layer_references(config, "output_layers"))
    for entry in layers:
        if _entry_name(entry) not in added and "inbound_nodes" in entry:
            references += list(structure.layer_references(entry, "inbound_nodes"))
    for holder, index in references:
        source = holder[index]
        if source[0] in redirect:
            if source[2] != 0:
                raise ValueError(
                    f"Layer '{source[0]}' has several outputs; NoiseInjection follows a layer with one output. "
                    "Name the layers that read its outputs in `after=` instead."
                )
            holder[index] = [redirect[source[0]], *source[1:]]
    return config


def _renamed(config, prefix):
    """`config` (a model's) named `prefix`, every layer entry (nested ones too) renamed f"{prefix}_{name}".

    Lambda layers keep their names: the rebuild finds their live functions by
    name (their configs hold bytecode), and they hold no weights to key by name.
    """
    names = {_entry_name(e) for e in _entries(config) if e.get("class_name") != "Lambda"}
    config["name"] = prefix
    for entry in _entries(config):
        for holder in (entry, entry.get("config", {})):
            if holder.get("name") in names:
                holder["name"] = f"{prefix}_{holder['name']}"

    def rename_references(level):
        references = [r for key in ("input_layers", "output_layers") if key in level for r in structure.layer_references(level, key)]
        for entry in level.get("layers", []):
            if "inbound_nodes" in entry:
                references.extend(structure.layer_references(entry, "inbound_nodes"))
            inner = _nested_config(entry)
            if inner is not None:
                rename_references(inner)
        for holder, index in references:
            if holder[index][0] in names:
                holder[index] = [f"{prefix}_{holder[index][0]}", *holder[index][1:]]

    rename_references(config)
    return config


def _renamed_member(model, prefix):
    """A plain Functional copy of `model` named `prefix`, its layers renamed apart (weights copied)."""
    member = conversion.rebuild(model, _unchanged, keras.Model, transform=lambda config: _renamed(config, prefix))
    if member.name != prefix:  # a Sequential is rebuilt under its own name
        member = keras.Model(member.inputs[0], member.outputs[0], name=prefix)
    conversion.copy_weights(model, member, rename=lambda name: f"{prefix}_{name}")
    return member
