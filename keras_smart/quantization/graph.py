"""Where a kernel layer sits in a model's graph: on a residual shortcut, or as the classifier.

The graph is read from the built model (`_compat.graph_nodes` for Functional
models, the layer order for Sequential ones) and flattened across nested
models: a nested model's inputs and outputs are joined to the tensors of the
call that uses it, so a path may enter and leave nested models.
"""

import collections
import itertools

from keras_smart import _compat
from keras_smart import registry

keras = _compat.keras

_NORMALIZATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


def computes_with_kernels(layer):
    """Whether `layer` multiplies its input by weights (conv, dense, attention, recurrent, ...).

    Normalisation layers do not count: they scale each channel on its own.
    """
    if registry.kernel_names(layer) or isinstance(layer, keras.layers.MultiHeadAttention):
        return True
    if isinstance(layer, keras.Model) or isinstance(layer, _NORMALIZATION):
        return False
    return bool(layer.trainable_weights)


def is_pointwise_conv(layer):
    """Whether `layer` is a convolution with a 1x1 (1, 1x1x1) kernel."""
    conv_classes = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
    if not isinstance(layer, conv_classes) or isinstance(layer, keras.layers.Conv2DTranspose):
        return False
    return all(k == 1 for k in layer.kernel_size)


class ModelGraph:
    """The calls of a model and the tensors between them, nested models opened.

    Vertices are tensors and layer calls; `edges[v]` lists what v feeds.
    `calls[layer name]` lists the call vertices of that layer; vertices in
    `outputs` are the model's own outputs.
    """

    def __init__(self, model):
        self.edges = collections.defaultdict(list)
        self.layer_of = {}
        self.calls = collections.defaultdict(list)
        self._ids = itertools.count()
        _, outputs = self._add_model(model, prefix=())
        self.outputs = set(outputs)

    def _call(self, layer, prefix):
        vertex = ("call", prefix, next(self._ids))
        self.layer_of[vertex] = layer
        self.calls[layer.name].append(vertex)
        return vertex

    def _add_model(self, model, prefix):
        """Adds `model`'s graph; returns (its input vertices, its output vertices)."""
        if _compat.is_sequential(model):
            return self._add_sequential(model, prefix)
        tensor = lambda t: ("tensor", prefix, id(t))  # noqa: E731
        for row, (layer, inputs, outputs) in enumerate(_compat.graph_nodes(model)):
            if not inputs:  # keras.Input
                continue
            if isinstance(layer, keras.Model):
                inner_inputs, inner_outputs = self._add_model(layer, prefix + (row,))
                self._join([tensor(t) for t in inputs], inner_inputs)
                self._join(inner_outputs, [tensor(t) for t in outputs])
                continue
            vertex = self._call(layer, prefix)
            for t in inputs:
                self.edges[tensor(t)].append(vertex)
            self.edges[vertex].extend(tensor(t) for t in outputs)
        return [tensor(t) for t in model.inputs], [tensor(t) for t in model.outputs]

    def _add_sequential(self, model, prefix):
        """A Sequential model is a chain: layer i reads what layer i - 1 wrote."""
        current = ("tensor", prefix, "input")
        first = current
        for index, layer in enumerate(model.layers):
            after = ("tensor", prefix, index)
            if isinstance(layer, keras.Model):
                inner_inputs, inner_outputs = self._add_model(layer, prefix + (index,))
                self._join([current], inner_inputs)
                self._join(inner_outputs, [after])
            else:
                vertex = self._call(layer, prefix)
                self.edges[current].append(vertex)
                self.edges[vertex].append(after)
            current = after
        return [first], [current]

    def _join(self, sources, targets):
        for source, target in zip(sources, targets):
            self.edges[source].append(target)

    def _reach(self, starts, found, blocked=lambda vertex: False):
        """Whether a walk from `starts` meets a vertex with `found(vertex)`, not walking past `blocked` ones."""
        seen, stack = set(), list(starts)
        while stack:
            vertex = stack.pop()
            if vertex in seen:
                continue
            seen.add(vertex)
            if found(vertex):
                return True
            if not blocked(vertex):
                stack.extend(self.edges.get(vertex, ()))
        return False

    def _is_kernel_call(self, vertex):
        layer = self.layer_of.get(vertex)
        return layer is not None and computes_with_kernels(layer)

    def is_classifier(self, layer):
        """Whether an output of `layer` reaches a model output through no other kernel layer."""
        return any(
            self._reach(self.edges[call], lambda v: v in self.outputs, self._is_kernel_call)
            for call in self.calls.get(layer.name, ())
        )

    def is_shortcut(self, layer):
        """Whether `layer` is a 1x1 convolution on a residual shortcut.

        Its output reaches an Add through no other kernel layer, and its input
        reaches that Add too without passing through it (the block's main
        branch): the last 1x1 convolution of a bottleneck's main branch is no
        shortcut.
        """
        if not is_pointwise_conv(layer):
            return False
        for call in self.calls.get(layer.name, ()):
            inputs = [v for v, targets in self.edges.items() if call in targets]
            for add in self._adds_reached(call):
                if self._reach(inputs, lambda v, a=add: v == a, lambda v, c=call: v == c):
                    return True
        return False

    def _adds_reached(self, call):
        """The Add calls an output of `call` reaches through no other kernel layer."""
        adds = []

        def found(vertex):
            if isinstance(self.layer_of.get(vertex), keras.layers.Add):
                adds.append(vertex)
            return False

        self._reach(self.edges[call], found, lambda v: self._is_kernel_call(v) or v in adds)
        return adds
