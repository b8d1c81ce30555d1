"""The channel groups of a plain Functional model: a kernel layer's output channels, followed through per-channel layers.

A group starts at a producer (a Conv1D/2D/3D with groups=1, a Dense, a
SeparableConv's pointwise kernel) called once, takes in every layer that
carries its channels through one by one (batch-norm, activations, pooling,
padding, global pooling, a DepthwiseConv with depth_multiplier 1), and ends
where its channels leave it: the edges to other layers (kernel layers that mix
the channels, Flatten, Add, Concatenate, ...) and the model's outputs. Channel
j of a group is one channel all along the group: it is dropped everywhere in it
or kept everywhere.
"""

import dataclasses

from keras_smart import _compat
from keras_smart.exits import structure
from keras_smart.masks import channel_layers

keras = _compat.keras


def _classes(*names):
    return tuple(getattr(keras.layers, name) for name in names if hasattr(keras.layers, name))


_CONV = _classes("Conv1D", "Conv2D", "Conv3D")
TRANSPOSED = _classes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
DEPTHWISE = _classes("DepthwiseConv1D", "DepthwiseConv2D")
_SEPARABLE = _classes("SeparableConv1D", "SeparableConv2D")


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in ("channels_last", None)


def is_conv(layer):
    """A plain convolution over channels last with groups=1 (not transposed, depthwise or separable)."""
    return (
        isinstance(layer, _CONV)
        and not isinstance(layer, TRANSPOSED + DEPTHWISE + _SEPARABLE)
        and getattr(layer, "groups", 1) == 1
        and _channels_last(layer)
    )


def is_dense(layer):
    return isinstance(layer, keras.layers.Dense)


def is_depthwise(layer):
    """A DepthwiseConv with depth_multiplier 1 over channels last: output channel j reads input channel j alone."""
    return isinstance(layer, DEPTHWISE) and layer.depth_multiplier == 1 and _channels_last(layer)


def producer_kernel(layer):
    """The name of the kernel whose last axis is `layer`'s output channels, or None if it is no producer."""
    if is_conv(layer) or is_dense(layer):
        return "kernel"
    if isinstance(layer, _SEPARABLE) and _channels_last(layer):
        return "pointwise_kernel"
    return None


def passes_channels(layer):
    """Whether `layer` maps channel j to channel j alone, with no weights or with per-channel weights it can slice."""
    if is_depthwise(layer):
        return True
    if not (channel_layers.per_channel(layer) or channel_layers.pools_space(layer)):
        return False
    return not layer.weights or isinstance(layer, keras.layers.BatchNormalization)


@dataclasses.dataclass
class Group:
    """One producer's output channels and the layers they flow through unchanged in number.

    Attributes:
      root: the producer's name.
      members: the per-channel layers of the group, each after the layer it reads.
      parent: {member: the name of the layer whose output it reads}.
      edges: [(group layer, consumer)]: where the channels leave the group.
      outputs: the group's layers whose output is a model output.
    """

    root: str
    members: list
    parent: dict
    edges: list
    outputs: list


@dataclasses.dataclass
class Graph:
    """A Functional model's layer graph: {name: inputs}, {name: consumers}, calls per layer, output layers."""

    inputs: dict
    consumers: dict
    calls: dict
    outputs: list

    def single(self, name):
        """Whether layer `name` is called once, on one layer's output."""
        return self.calls.get(name) == 1 and len(self.inputs.get(name, ())) == 1


def read_graph(model):
    """The `Graph` of a Functional model; None for other models."""
    config = structure.graph_config(model)
    if config is None:
        return None
    inputs = structure.layer_graph(config)
    consumers = {name: [] for name in inputs}
    for name, sources in inputs.items():
        for source in dict.fromkeys(sources):
            consumers.setdefault(source, []).append(name)
    calls = {entry["config"].get("name", entry.get("name")): len(entry.get("inbound_nodes") or ()) for entry in
             config["layers"]}
    return Graph(inputs=inputs, consumers=consumers, calls=calls, outputs=structure.output_layer_names(config))


def groups(model, graph):
    """The `Group` of every producer of `model` (top level) that is called once."""
    found = []
    for layer in model.layers:
        if producer_kernel(layer) is None or not graph.single(layer.name):
            continue
        group = Group(root=layer.name, members=[], parent={}, edges=[], outputs=[])
        pending = [layer.name]
        while pending:
            name = pending.pop(0)
            if name in graph.outputs:
                group.outputs.append(name)
            for consumer in graph.consumers.get(name, ()):
                if graph.single(consumer) and passes_channels(model.get_layer(consumer)):
                    group.members.append(consumer)
                    group.parent[consumer] = name
                    pending.append(consumer)
                else:
                    group.edges.append((name, consumer))
        found.append(group)
    return found
