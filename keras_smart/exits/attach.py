"""attach(): a classifier with early exits (RDI-Nets): heads on inner features, their logits as outputs."""

import collections
import difflib

from keras_smart import _compat
from keras_smart import conversion
from keras_smart import training
from keras_smart.exits import heads as heads_lib
from keras_smart.exits import structure

keras = _compat.keras


def attach(model, after, head=None):
    """A new model with early exits: one head per layer in `after`, its logits an extra output.

    Each exit is a nested Functional model "exit_1", "exit_2", ... (in the order
    of `after`) from the output of its layer to logits [B, classes]; the model's
    outputs are [exit_1 logits, ..., exit_n logits, original output], named
    after the exits ("exit_1", ...) and the original output layer. The input
    model is not modified: the trunk is a clone with the same weights, so the
    original output computes what `model` computes.

    The default head depends on the feature rank: [B, H, W, C] features get
    Conv2D(3x3, stride 2, max(C, 16) filters, no bias) -> BatchNormalization -> ReLU ->
    AveragePooling2D to at most 4x4 -> Flatten -> Dense(classes); [B, T, D] features
    GlobalAveragePooling1D -> Dense(classes); [B, D] features Dense(classes).

    A SmartModel comes back as a SmartModel at the same trade-off: its heads
    are converted with the method and options of its conditional layers, and
    every conditional layer (trunk and heads) reads the new model's one
    trade-off variable. A plain model comes back plain; `keras_smart.convert`
    then gives the same structure as attaching to the converted model.

    Args:
      model: a built Functional or Sequential model (or SmartModel) with one
        input and one output, the logits [B, classes].
      after: a non-empty list of names of the model's top-level layers, in
        graph order (earliest first); `model.summary()` lists them.
      head: None (the default heads) or a callable `head(features, classes) ->
        logits` called once per exit on a `keras.Input` of the feature shape;
        it must return a [B, classes] tensor, and its layers' names must be
        unique in the whole model.

    Returns:
      The multi-exit model (a SmartModel for a SmartModel, else a Functional model).

    Raises:
      TypeError: `model` is not a Functional or Sequential Keras model, `after`
        is not a list of names, `head` is not callable or returns no tensor.
      ValueError: several inputs or outputs (or already multi-exit), an
        output that is not [B, classes] logits, an unknown, nested, repeated,
        out-of-order or shared layer in `after`, a layer with several outputs,
        a head output of the wrong shape, or layer names used twice.

    Example:
      >>> multi = keras_smart.exits.attach(cnn, after=["conv"])
      >>> multi.output_names, [tuple(o.shape) for o in multi(x[:2])]
      (['exit_1', 'logits'], [(2, 10), (2, 10)])
      >>> np.allclose(multi(x[:2])[-1], cnn(x[:2]))
      True
      >>> smart_multi = keras_smart.exits.attach(smart, after=["conv"])
      >>> type(smart_multi.get_layer("exit_1").get_layer("exit_1_conv")).__name__
      'DualMaskConv2D'
    """
    classes = _check_model(model)
    names = _check_after(model, after)
    trunk = conversion.clone(model)
    features = _feature_tensors(trunk, names)
    heads = _build_heads(trunk, features, classes, head)
    smart = isinstance(model, training.SmartModel)
    if smart:
        heads = _conditional_heads(heads, model)
    _check_unique_names(trunk, heads)
    outputs = [h(f) for h, f in zip(heads, features)] + [trunk.outputs[0]]
    if not smart:
        return keras.Model(trunk.inputs[0], outputs, name=model.name)
    attached = training.SmartModel(trunk.inputs[0], outputs, name=model.name)  # binds every conditional layer
    attached.tradeoff_variable.assign(model.tradeoff_variable)
    return attached


def _build_heads(trunk, features, classes, head):
    """The plain exit heads on `features`, their layers renamed apart from the trunk's and each other's."""
    taken = {layer.name for layer in _compat.flatten_layers(trunk)}
    heads = []
    for k, tensor in enumerate(features, start=1):
        built = heads_lib.renamed_apart(heads_lib.build_head(tensor, classes, head, k), taken)
        taken |= {built.name, *(layer.name for layer in _compat.flatten_layers(built))}
        heads.append(built)
    return heads


def _conditional_heads(heads, source):
    converted, seed = [], heads_lib.first_seed(source)
    for head in heads:
        head, seed = heads_lib.conditional_head(head, source, seed)
        converted.append(head)
    return converted


def _check_model(model):
    """The number of classes of `model`, after checking it can take exits."""
    if not isinstance(model, keras.Model) or not _compat.is_functional(model):
        kind = type(model).__name__
        raise TypeError(
            "`attach` expects a Functional or Sequential keras.Model (or a SmartModel) of the active Keras "
            f"flavour. Received: {kind}"
            + (" (a subclassed model: rebuild it with the Functional API)" if isinstance(model, keras.Model) else "")
        )
    if structure.is_multi_exit(model):
        points = structure.exit_points(model)
        raise ValueError(
            f"Model '{model.name}' already has exits (after {[after for _, after in points]}). Attach every "
            "exit at once, to the model without exits: attach(model, after=[all the layer names])."
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(f"Model '{model.name}' is not built: start it with keras.Input(shape=...) before `attach`.")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"`attach` needs a model with one input and one output (the logits); '{model.name}' has "
            f"{len(inputs)} input(s) and {len(outputs)} output(s)."
        )
    shape = tuple(outputs[0].shape)
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"`attach` needs a classifier whose output is logits [B, classes]; '{model.name}' outputs shape "
            f"{shape}. Exits are classifiers of the same classes."
        )
    return int(shape[-1])


def _check_after(model, after):
    """`after` as a list of top-level layer names of `model`, each checked, in graph order."""
    if isinstance(after, str):
        after = [after]
    if not isinstance(after, (list, tuple)) or not all(isinstance(n, str) for n in after):
        raise TypeError(f"`after` must be a list of layer names, e.g. ['block_3_add']. Received: after={after!r}")
    if not after:
        raise ValueError("`after` is empty: name at least one layer to attach an exit after.")
    position = {layer.name: i for i, layer in enumerate(model.layers)}
    for name in after:
        if name not in position:
            raise ValueError(_unknown_layer_message(model, name))
    repeated = sorted(n for n, count in collections.Counter(after).items() if count > 1)
    if repeated:
        raise ValueError(f"`after` names a layer more than once: {repeated}. One exit per layer.")
    if [position[n] for n in after] != sorted(position[n] for n in after):
        raise ValueError(
            f"`after` must list layers in graph order (earliest first). Received: {list(after)}; in the "
            f"model's order: {sorted(after, key=position.get)}"
        )
    taken = sorted({structure.head_name(k) for k in range(1, len(after) + 1)} & set(position))
    if taken:
        raise ValueError(f"Model '{model.name}' already has layers named {taken}, the names exits take. Rename them.")
    return list(after)


def _unknown_layer_message(model, name):
    for outer in model.layers:
        if isinstance(outer, keras.Model) and name in {l.name for l in _compat.flatten_layers(outer)}:
            return (
                f"Layer '{name}' is inside the nested model '{outer.name}'; exits hang on top-level layers. "
                f"Attach after '{outer.name}' itself, or rebuild the model with that model's layers at the top level."
            )
    names = [layer.name for layer in model.layers]
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    listed = f"Layers with similar names: {near}" if near else f"Its first layers: {names[:5]}"
    return (
        f"`after` names no layer of model '{model.name}': '{name}'. {listed}. "
        "model.summary() lists every layer name."
    )


def _feature_tensors(trunk, names):
    """The output tensor of each top-level layer `names` of the trunk (a Functional clone), checked."""
    config = trunk.get_config()
    calls = {e["config"].get("name", e.get("name")): len(e.get("inbound_nodes", [])) for e in config["layers"]}
    output_layer = structure.output_layer_names(config)[-1]
    tensors = []
    for name in names:
        if name == output_layer:
            raise ValueError(f"Layer '{name}' gives the model's output, which is already the last exit.")
        if calls[name] > 1:
            raise ValueError(
                f"Layer '{name}' is called {calls[name]} times in the model (a shared layer), so its output is "
                "not one tensor. Attach after a layer called once, e.g. the one that follows it."
            )
        output = trunk.get_layer(name).output
        if isinstance(output, (list, tuple, dict)):
            raise ValueError(
                f"Layer '{name}' has {len(output)} outputs; an exit needs one feature tensor. Attach after a "
                "layer with a single output."
            )
        tensors.append(output)
    return tensors


def _check_unique_names(trunk, heads):
    """Raises if a head layer's name is used elsewhere in the model (in the trunk or another head)."""
    owners = collections.defaultdict(list)
    for name in {layer.name for layer in _compat.flatten_layers(trunk)}:
        owners[name].append("the trunk")
    for head in heads:
        for name in [head.name] + [layer.name for layer in _compat.flatten_layers(head)]:
            owners[name].append(head.name)
    clashes = {name: where for name, where in owners.items() if len(where) > 1}
    if clashes:
        listed = ", ".join(f"'{n}' ({' and '.join(w)})" for n, w in sorted(clashes.items())[:5])
        raise ValueError(
            f"Layer names must be unique across the trunk and the exit heads (masks and counts are keyed by "
            f"name); used twice: {listed}. Give the head's layers distinct names."
        )
