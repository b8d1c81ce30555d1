"""Reading a multi-exit model's structure: which exits it has, the layers they hang on, its layer graph.

A multi-exit model (what `attach` returns) is recognised by its structure alone,
so the answer survives `.keras` files, `convert`, `strip` and clones: its
outputs are the nested models "exit_1", ..., "exit_n" (in that order), each
called once on the output of one top-level layer, then the original output.
The graph is read from the model's config (public in both Keras flavours).
"""

from keras_smart import _compat

keras = _compat.keras

NOT_MULTI_EXIT = "not a multi-exit model (made by keras_smart.exits.attach)"


def head_name(index):
    """The name of the nested model of side exit `index` (1-based): "exit_1", "exit_2", ..."""
    return f"exit_{index}"


def exit_points(model):
    """The side exits of a multi-exit model: [(head name, name of the layer it hangs on)], earliest first.

    Args:
      model: a model made by `keras_smart.exits.attach` (also after `convert`,
        `strip` or a `.keras` round trip).

    Returns:
      A list of (head name, after-layer name) pairs, one per side exit (the
      final output is not listed).

    Raises:
      ValueError: `model` is not a multi-exit model.

    Example:
      >>> multi = keras_smart.exits.attach(cnn, after=["conv"])
      >>> keras_smart.exits.exit_points(multi)
      [('exit_1', 'conv')]
    """
    points, reason = _read_exit_points(model)
    if points is None:
        name = getattr(model, "name", type(model).__name__)
        raise ValueError(
            f"Model '{name}' is {NOT_MULTI_EXIT}: {reason}. Make one with "
            "keras_smart.exits.attach(model, after=[layer names])."
        )
    return points


def is_multi_exit(model):
    """Whether `model` is a multi-exit model (see `exit_points`).

    Example:
      >>> keras_smart.exits.is_multi_exit(cnn), keras_smart.exits.is_multi_exit(
      ...     keras_smart.exits.attach(cnn, after=["conv"]))
      (False, True)
    """
    return _read_exit_points(model)[0] is not None


def graph_config(model):
    """The config of a Functional model ({"layers", "input_layers", "output_layers", ...}); None otherwise."""
    if not isinstance(model, keras.Model) or not _compat.is_functional(model) or _compat.is_sequential(model):
        return None
    try:
        config = model.get_config()
    except NotImplementedError:
        return None
    return config if isinstance(config, dict) and "output_layers" in config else None


def layer_references(container, key):
    """(holder, index) of every layer reference in `container[key]`, a piece of a Functional config (a
    layer entry's "inbound_nodes", the config's "output_layers"): `holder[index]` is [name, node, index, ...].

    Keras 3 records an input as {"class_name": "__keras_tensor__", "config":
    {"keras_history": [name, node, index]}}; tf_keras as [name, node, index,
    kwargs], whose kwargs may hold more references.
    """
    value = container[key]
    if isinstance(value, (list, tuple)) and len(value) in (3, 4) and isinstance(value[0], str) and all(
        isinstance(v, int) for v in value[1:3]
    ):
        yield container, key
        if len(value) == 4:
            yield from layer_references(value, 3)
        return
    items = value.keys() if isinstance(value, dict) else range(len(value)) if isinstance(value, (list, tuple)) else ()
    for item in items:
        yield from layer_references(value, item)


def inbound_names(entry):
    """The names of the layers whose outputs a layer entry of a model config is called on (all calls)."""
    return [holder[index][0] for holder, index in layer_references(entry, "inbound_nodes")] if "inbound_nodes" in entry else []


def layer_graph(config):
    """{layer name: [names of the layers it takes inputs from]} of a Functional model's config."""
    return {entry["config"].get("name", entry.get("name")): inbound_names(entry) for entry in config["layers"]}


def output_layer_names(config):
    """The names of the layers producing a Functional config's outputs, in order."""
    outputs = config["output_layers"]
    if outputs and isinstance(outputs[0], str):  # a single output written flat: [name, node, index]
        outputs = [outputs]
    return [output[0] for output in outputs]


def _read_exit_points(model):
    """(points, None) for a multi-exit model, else (None, why not)."""
    config = graph_config(model)
    if config is None:
        return None, "it is not a Functional model"
    outputs = output_layer_names(config)
    if len(outputs) < 2:
        return None, f"it has {len(outputs)} output(s)"
    expected = [head_name(k) for k in range(1, len(outputs))]
    if outputs[:-1] != expected:
        return None, f"its outputs come from {outputs}, not from {expected} followed by the final output"
    entries = {entry["config"].get("name", entry.get("name")): entry for entry in config["layers"]}
    points = []
    for name in expected:
        entry, layer = entries.get(name), model.get_layer(name)
        sources = inbound_names(entry) if entry else []
        if not isinstance(layer, keras.Model) or len(entry.get("inbound_nodes", [])) != 1 or len(sources) != 1:
            return None, f"'{name}' is not a nested model called once on one layer's output"
        points.append((name, sources[0]))
    return points, None
