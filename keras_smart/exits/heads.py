"""Exit heads: the small classifiers `attach` hangs on inner features, plain or conditional.

Each head is a nested Functional model "exit_<k>" from a `keras.Input` of the
feature shape to logits [B, classes]. Its layers are named "exit_<k>_..." so
that names stay unique across the whole model (masks and counts are keyed by
layer name).
"""

import copy

from keras_smart import _compat
from keras_smart import conversion
from keras_smart import registry
from keras_smart.exits import structure

keras = _compat.keras

# The least number of filters of the default head's convolution (narrow early features get more).
MIN_HEAD_FILTERS = 16


def default_head(features, classes, prefix):
    """The default exit head on a `keras.Input` of the features, by their rank.

    4-D [B, H, W, C]: Conv2D(3x3, stride 2, same, max(C, 16) filters, no
    bias) -> BatchNormalization -> ReLU -> AveragePooling2D down to at most
    4x4 -> Flatten -> Dense(classes) (RDI-Nets' conv -> pool -> FC exit). The
    stride keeps an early exit cheap (a quarter of the MACs of the same conv
    at full resolution); the 4x4 grid keeps where features are, which a
    global average loses (on the digits, exits with a global average learned
    far slower). Unknown spatial sizes fall back to a global average.
    3-D [B, T, D] (sequences, ViT tokens):
    GlobalAveragePooling1D -> Dense(classes); 2-D [B, D]: Dense(classes).
    Layers are named f"{prefix}_conv", ..., f"{prefix}_logits".

    Raises:
      ValueError: features of another rank, or 4-D features with unknown channels.
    """
    shape = tuple(features.shape)
    if len(shape) == 4:
        if shape[-1] is None:
            raise ValueError(
                f"The default head of '{prefix}' needs the feature channels; features of shape {shape} have "
                "none. Pass `head=` (a callable head(features, classes) -> logits)."
            )
        h = keras.layers.Conv2D(
            max(int(shape[-1]), MIN_HEAD_FILTERS), 3, strides=2, padding="same", use_bias=False,
            name=f"{prefix}_conv",
        )(features)
        h = keras.layers.BatchNormalization(name=f"{prefix}_bn")(h)
        h = keras.layers.ReLU(name=f"{prefix}_relu")(h)
        h = _pool_to_grid(h, prefix)
    elif len(shape) == 3:
        h = keras.layers.GlobalAveragePooling1D(name=f"{prefix}_pool")(features)
    elif len(shape) == 2:
        h = features
    else:
        raise ValueError(
            f"No default head for features of shape {shape} ('{prefix}'): the default heads take "
            "[B, H, W, C] images, [B, T, D] sequences or [B, D] vectors. Pass `head=` (a callable "
            "head(features, classes) -> logits), or attach after another layer."
        )
    return keras.layers.Dense(classes, name=f"{prefix}_logits")(h)


def build_head(features, classes, head, index):
    """The plain head model "exit_<index>" on `features` (a Keras tensor of the trunk).

    Args:
      features: the output tensor of the layer the exit hangs on.
      classes: the number of logits.
      head: None (`default_head`) or a callable head(inputs, classes) -> logits tensor.
      index: the exit's 1-based index.

    Raises:
      TypeError: `head` is not callable or returns no single Keras tensor.
      ValueError: the head's output is not [B, classes].
    """
    name = structure.head_name(index)
    inputs = keras.Input(tuple(features.shape[1:]), dtype=features.dtype, name=f"{name}_input")
    if head is None:
        outputs = default_head(inputs, classes, name)
    elif not callable(head):
        raise TypeError(
            "`head` must be None (the default head) or a callable head(features, classes) -> logits. "
            f"Received: {type(head).__name__}"
        )
    else:
        outputs = head(inputs, classes)
        _check_head_output(outputs, classes, name)
    return keras.Model(inputs, outputs, name=name)


def _check_head_output(outputs, classes, name):
    if not keras.backend.is_keras_tensor(outputs):
        raise TypeError(
            f"`head` must return one Keras tensor, the logits [B, {classes}], built from the Input it is "
            f"given (for '{name}'). Received: {type(outputs).__name__}"
        )
    shape = tuple(outputs.shape)
    if len(shape) != 2 or shape[-1] != classes:
        raise ValueError(
            f"`head` must return logits of shape (None, {classes}) (the model's classes) for '{name}'. "
            f"Received: shape {shape}. End the head with keras.layers.Dense({classes}) on a [B, D] tensor "
            "(e.g. after global pooling)."
        )


def renamed_apart(head, taken):
    """`head`, or a copy of it (same weights) whose top-level layers named like one in `taken` are
    renamed f"{head.name}_{name}": a head's auto-named layers ("flatten", "dense") may repeat the
    trunk's names, and masks and counts are keyed by layer name.
    """
    mapping = {l.name: f"{head.name}_{l.name}" for l in head.layers if l.name in taken}
    if not mapping:
        return head
    config = copy.deepcopy(head.get_config())
    references = [ref for key in ("input_layers", "output_layers") for ref in structure.layer_references(config, key)]
    for entry in config["layers"]:
        for holder in (entry, entry.get("config", {})):
            if holder.get("name") in mapping:
                holder["name"] = mapping[holder["name"]]
        if "inbound_nodes" in entry:
            references += list(structure.layer_references(entry, "inbound_nodes"))
    for holder, index in references:
        if holder[index][0] in mapping:
            holder[index] = [mapping[holder[index][0]], *holder[index][1:]]
    objects = {
        type(l).__name__: type(l) for l in _compat.flatten_layers(head) if not _compat.is_builtin_layer_class(type(l))
    }
    with _compat.custom_object_scope(objects):
        renamed = keras.Model.from_config(config)
    renamed.set_weights(head.get_weights())
    return renamed


def conditional_head(head_model, source, first_seed):
    """`head_model` converted with the method and options of SmartModel `source`, as a plain Functional model.

    The head's conditional layers are bound to a trade-off later (by the
    SmartModel the head ends up in). Seeded methods get seeds from
    `first_seed` on (None: the layers' defaults).

    Returns:
      (the converted head, the next free seed or None).

    Raises:
      ValueError: `source`'s conditional layers come from no single conversion method.
    """
    method = registry.method_of(source)
    if method is None:
        raise ValueError(
            f"Cannot tell which conversion method made '{source.name}' (its conditional layers come from "
            "none or several), so `attach` cannot convert the exit heads alike. Attach the exits to the "
            "plain model and convert the result: keras_smart.convert(keras_smart.exits.attach(model, ...), method)."
        )
    options = method_options(source, method)
    if first_seed is not None:
        options["seed"] = first_seed
    converted = conversion.convert(head_model, method.value, **options)  # warns of layers left plain
    seeded = sum("seed" in layer.conditional_config_keys for layer in converted.conditional_layers())
    next_seed = None if first_seed is None else first_seed + seeded
    return keras.Model(converted.inputs[0], converted.outputs[0], name=head_model.name), next_seed


def method_options(smart, method):
    """The conversion options `smart`'s conditional layers were made with (seeds left out)."""
    accepted = set(registry.accepted_options(method))
    options = {}
    for layer in smart.conditional_layers():
        config = layer.get_config()
        for key in layer.conditional_config_keys:
            if key in accepted and key != "seed" and key not in options and key in config:
                options[key] = config[key]
    return options


def first_seed(smart):
    """One past the largest seed of `smart`'s seeded layers when they carry distinct seeds (a seeded
    `convert`), else None (the layers' default seeds)."""
    seeds = {
        layer.get_config().get("seed")
        for layer in smart.conditional_layers()
        if "seed" in layer.conditional_config_keys
    }
    seeds.discard(None)
    return max(seeds) + 1 if len(seeds) > 1 else None


# The side of the grid the default 4-D head pools its features to before the dense layer.
HEAD_GRID = 4


def _pool_to_grid(h, prefix):
    """Average-pools [B, H, W, C] to at most HEAD_GRID x HEAD_GRID and flattens; a global average if H or W is unknown."""
    height, width = h.shape[1], h.shape[2]
    if height is None or width is None:
        return keras.layers.GlobalAveragePooling2D(name=f"{prefix}_pool")(h)
    pool = (-(-int(height) // HEAD_GRID), -(-int(width) // HEAD_GRID))
    h = keras.layers.AveragePooling2D(pool, padding="same", name=f"{prefix}_pool")(h)
    return keras.layers.Flatten(name=f"{prefix}_flatten")(h)
