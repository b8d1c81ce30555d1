"""Which output channels can go, exactly: a channel whose kernel slice is zero is a constant its consumers absorb.

An output channel j of a producer whose kernel slice is all zero computes
activation(bias_j) at every position, whatever the input: a known map. The
group's per-channel layers map known maps to known maps (each is evaluated
on them, in inference mode); a depthwise layer whose kernel slice j is zero
makes channel j known again (its bias). Where the channels leave the group,
each consumer says which channels it can do without, exactly:
- a Dense, or a Conv with a 1x1 kernel or "valid" padding: channel j if its
  kernel rows for j are zero, or if channel j is a known constant c_j (c_j
  times the rows' sum goes into the bias);
- a zero-padded Conv (its own "same" padding, or a padding layer on the way)
  sees a known constant as c_j times one fixed map (ones inside, zeros on the
  border), not as a constant. Known maps proportional to one another,
  c_j = a_j * c_r, reach it through one channel: the largest, r, is kept and
  carries the others (its kernel rows gain a_j times theirs), which go;
- a Flatten read only by Dense layers: channel j if it is known (any map:
  each position's rows times its value go into the bias) or its rows are zero;
- anything else (Add, Concatenate, Multiply, a model output, a transposed,
  grouped, separable or depthwise-multiplier conv, nested models): none.
Channel j is dropped from the whole group when every consumer can do without
it. Each group is decided alone; one pass.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart.layers import base
from keras_smart.masks import channel_layers

keras = _compat.keras

# A map is constant over positions when its range is within this share of its magnitude (round-off of pooling).
_CONSTANT_RTOL = 1e-6


@dataclasses.dataclass
class Group:
    """One producer's output channels and the layers they flow through unchanged in number.

    A group starts at a producer (`channel_layers.producer_kernel`) called once,
    takes in every layer called once that carries its channels through one by
    one (`channel_layers.passes_channels`), and ends where its channels leave it.

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


def groups(model, graph):
    """The `Group` of every producer of `model` (top level) that is called once."""
    found = []
    for layer in model.layers:
        if channel_layers.producer_kernel(layer) is None or not graph.single(layer.name):
            continue
        group = Group(root=layer.name, members=[], parent={}, edges=[], outputs=[])
        if layer.name in graph.outputs:
            group.outputs.append(layer.name)

        def visit(name, source, _, group=group):
            if graph.single(name) and channel_layers.passes_channels(model.get_layer(name)):
                group.members.append(name)
                group.parent[name] = source
                if name in graph.outputs:
                    group.outputs.append(name)
                return True, None
            group.edges.append((source, name))
            return False, None

        graph.follow(layer.name, visit)
        found.append(group)
    return found


@dataclasses.dataclass
class Plan:
    """The edits that make a model narrower.

    Attributes:
      out_keep: {producer: kept output channel indices}.
      channel_keep: {per-channel layer with weights (batch-norm, depthwise): kept channel indices}.
      in_keep: {consumer kernel layer: kept indices along its kernel's input axis (-2)}.
      bias_add: {consumer kernel layer: what the dropped constant channels add to its bias}.
      kernel_add: {consumer kernel layer: what a kept channel's kernel rows gain from the channels it carries}.
      touched: the layers whose input or output shape changes.
      dropped: {producer: number of output channels dropped}.
    """

    out_keep: dict = dataclasses.field(default_factory=dict)
    channel_keep: dict = dataclasses.field(default_factory=dict)
    in_keep: dict = dataclasses.field(default_factory=dict)
    bias_add: dict = dataclasses.field(default_factory=dict)
    kernel_add: dict = dataclasses.field(default_factory=dict)
    touched: set = dataclasses.field(default_factory=set)
    dropped: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _State:
    """Channel j of one layer's output: known (input-independent) or not, and its map (batch of 1)."""

    known: np.ndarray
    value: object  # float32 array (1, ..., C) with zeros where not known, or None when nothing is known


def plan(model):
    """The `Plan` that drops every output channel of `model` that can go exactly (see the module docstring)."""
    result = Plan()
    graph = channel_layers.read_graph(model)
    if graph is None:
        return result
    for group in groups(model, graph):
        root = model.get_layer(group.root)
        shape = tuple(root.output.shape[1:])
        if group.outputs or any(d is None for d in shape):
            continue
        states = _states(model, group, shape)
        keep_ok = np.ones(shape[-1], bool)
        edits = []
        for source, consumer in group.edges:
            ok, edit = _consumer(model, graph, model.get_layer(consumer), states[source])
            keep_ok &= ok
            edits.append(edit)
        drop = np.flatnonzero(keep_ok)
        if drop.size:
            _record(result, model, group, drop, edits)
    return result


def _record(result, model, group, drop, edits):
    channels = model.get_layer(group.root).output.shape[-1]
    keep = np.setdiff1d(np.arange(channels), drop)
    result.out_keep[group.root] = keep
    result.dropped[group.root] = int(drop.size)
    result.touched.update([group.root, *group.members, *(consumer for _, consumer in group.edges)])
    for member in group.members:
        if model.get_layer(member).weights:
            result.channel_keep[member] = keep
    for edit in edits:
        for name, in_keep, bias_add, kernel_add in edit(drop, keep):
            result.in_keep[name] = in_keep
            result.bias_add[name] = bias_add
            if kernel_add is not None:
                result.kernel_add[name] = kernel_add
            result.touched.add(name)


def _states(model, group, shape):
    """{group layer: _State} of the group's channels, maps evaluated only where some channel is known."""
    root = model.get_layer(group.root)
    weights = base.weights_by_name(root)
    kernel = weights[channel_layers.producer_kernel(root)]
    known = ~np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)
    bias = weights.get("bias", np.zeros(kernel.shape[-1], np.float32))
    value = None
    if known.any():
        value = np.broadcast_to(np.where(known, bias, 0.0), (1,) + shape).astype(np.float32)
        value = np.where(known, np.asarray(root.activation(tf.constant(value))), 0.0).astype(np.float32)
    states = {group.root: _State(known, value)}
    for name in group.members:
        states[name] = _through(model.get_layer(name), states[group.parent[name]])
    return states


def _through(layer, state):
    """The state after a per-channel layer; a depthwise layer with a zero kernel slice makes its channel known."""
    known = state.known
    if channel_layers.is_depthwise(layer):
        kernel = base.weights_by_name(layer)[_compat.DEPTHWISE_KERNEL]
        known = known | ~np.any(np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1) != 0, axis=1)
    if not known.any():
        return _State(known, None)
    value = np.zeros((1,) + tuple(layer.input.shape[1:]), np.float32) if state.value is None else state.value
    value = np.where(state.known, value, 0.0).astype(np.float32)
    with base.expected_noise():
        out = np.asarray(layer(tf.constant(value), training=False), np.float32)
    return _State(known, np.where(known, out, 0.0).astype(np.float32))


def _constants(state, channels):
    """(channels that are known constants, their values, channels that are known zeros)."""
    if state.value is None:
        return np.zeros(channels, bool), np.zeros(channels, np.float32), np.zeros(channels, bool)
    flat = state.value.reshape(-1, channels)
    spread = flat.max(0) - flat.min(0)
    constant = state.known & (spread <= _CONSTANT_RTOL * np.maximum(1.0, np.abs(flat).max(0)))
    return constant, np.where(constant, flat.mean(0), 0.0), state.known & ~np.any(flat != 0, axis=0)


def _no_edit(drop, keep):
    del drop, keep
    return []


def _consumer(model, graph, layer, state):
    """(channels `layer` can do without, edit(drop, keep) -> [(kernel layer, in_keep, bias_add)])."""
    channels = state.known.size
    if graph.single(layer.name) and (channel_layers.is_dense(layer) or channel_layers.is_conv(layer)):
        return _kernel_consumer(layer, state, channels)
    if graph.single(layer.name) and isinstance(layer, keras.layers.Flatten) and layer.name not in graph.outputs:
        readers = [model.get_layer(name) for name in graph.consumers.get(layer.name, ())]
        if readers and all(channel_layers.is_dense(r) and graph.single(r.name) for r in readers):
            return _flatten_consumer(readers, state, channels)
    return np.zeros(channels, bool), _no_edit


def _kernel_consumer(layer, state, channels):
    kernel = base.weights_by_name(layer)["kernel"]
    rows = kernel.reshape(-1, channels, kernel.shape[-1])  # (positions in the window, C, outputs)
    zero_rows = ~np.any(rows != 0, axis=(0, 2))
    constant, values, zero_map = _constants(state, channels)
    window_inside = channel_layers.is_dense(layer) or layer.padding == "valid" or all(k == 1 for k in layer.kernel_size)
    absorbed = constant & window_inside
    values = np.where(absorbed, values, 0.0)
    carrier, shares = _carried(state, state.known & ~absorbed & ~zero_map & ~zero_rows)

    def edit(drop, keep):
        bias_add = values[drop] @ rows[:, drop, :].sum(0)
        kernel_add = None
        if carrier is not None:
            kernel_add = np.zeros_like(rows)
            kernel_add[:, carrier, :] = np.einsum("j,pju->pu", shares[drop], rows[:, drop, :])
            kernel_add = kernel_add.reshape(kernel.shape)
        return [(layer.name, keep, bias_add.astype(np.float32), kernel_add)]

    return zero_rows | absorbed | zero_map | (shares != 0), edit


def _carried(state, candidates):
    """(r, a): the known channel r with the largest map among `candidates`, and a_j with map_j = a_j * map_r for
    every other candidate whose map is proportional to r's (0 elsewhere); (None, zeros) if none is."""
    channels = candidates.size
    shares = np.zeros(channels, np.float64)
    if state.value is None or candidates.sum() < 2:
        return None, shares
    flat = state.value.reshape(-1, channels).astype(np.float64)
    size = np.abs(flat).max(0)
    carrier = int(np.argmax(np.where(candidates, size, -1.0)))
    peak = int(np.argmax(np.abs(flat[:, carrier])))
    a = flat[peak] / flat[peak, carrier]
    proportional = np.all(np.abs(flat - np.outer(flat[:, carrier], a)) <= _CONSTANT_RTOL * np.maximum(1.0, size), 0)
    carried = candidates & proportional
    carried[carrier] = False
    shares[carried] = a[carried]
    return (carrier if carried.any() else None), shares


def _flatten_consumer(readers, state, channels):
    value = np.zeros((1, channels), np.float32) if state.value is None else state.value
    value = value.reshape(-1, channels)  # (positions, C), in Flatten's order
    positions = value.shape[0]
    ok = np.ones(channels, bool)
    for reader in readers:
        rows = base.weights_by_name(reader)["kernel"].reshape(positions, channels, -1)
        ok &= state.known | ~np.any(rows != 0, axis=(0, 2))

    def edit(drop, keep):
        index = np.arange(positions * channels).reshape(positions, channels)[:, keep].ravel()
        found = []
        for reader in readers:
            rows = base.weights_by_name(reader)["kernel"].reshape(positions, channels, -1)
            bias_add = np.einsum("pj,pju->u", value[:, drop], rows[:, drop, :])
            found.append((reader.name, index, bias_add.astype(np.float32), None))
        return found

    return ok, edit
