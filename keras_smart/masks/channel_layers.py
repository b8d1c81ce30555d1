"""How a kernel layer's output channels flow through a Functional model: the layer kinds and the graph walk.

A channel-structured mask drops whole output channels of a kernel layer. What
happens to such a channel downstream depends on the layers it flows through:
- `per_channel` layers (batch-norm, activations, dropout, padding, pooling,
  noise injection) compute output channel i from input channel i alone, so a
  dropped channel stays one channel, constant over the image (zero padding
  aside);
- `pools_space` layers (global pooling) keep the channels and drop space;
- a depthwise convolution with depth_multiplier 1 (`is_depthwise`) maps
  channel i to channel i through its own kernel slice;
- anything else (additions, concatenations, multiplications, reshapes,
  attention, unknown layers) mixes or re-indexes channels: a channel that
  reaches one cannot be dropped.
`read_graph` reads a Functional model's top-level graph and `Graph.follow`
walks forward from a producer; the channel plan (`masks.channels`) and
compaction (`compaction.analysis`) each decide, layer by layer, what the walk
does with the channels.
"""

import dataclasses

from keras_smart import _compat
from keras_smart.exits import structure
from keras_smart.layers import noise_injection

keras = _compat.keras

_PER_CHANNEL = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    noise_injection.NoiseInjection,
)
_POOLS_SPACE = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)
_PADDING = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D)


def _classes(*names):
    return tuple(getattr(keras.layers, name) for name in names if hasattr(keras.layers, name))


CONV = _classes("Conv1D", "Conv2D", "Conv3D")
TRANSPOSED = _classes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
DEPTHWISE = _classes("DepthwiseConv1D", "DepthwiseConv2D")
SEPARABLE = _classes("SeparableConv1D", "SeparableConv2D")


def channels_last(layer):
    """Whether `layer` keeps its channels on the last axis (layers without `data_format` do)."""
    return getattr(layer, "data_format", "channels_last") in ("channels_last", None)


def per_channel(layer):
    """Whether output channel i of `layer` depends on input channel i alone (channels last).

    Batch-norm counts only on the last axis; `keras_smart`'s dual batch-norm and
    FiLM layers subclass BatchNormalization.
    """
    if isinstance(layer, keras.layers.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else (list(layer.axis) or [None])[0]
        return axis == -1 or axis == len(layer.input.shape) - 1
    return isinstance(layer, _PER_CHANNEL) and channels_last(layer)


def pools_space(layer):
    """Whether `layer` keeps the channels and reduces the spatial axes (global pooling, channels last)."""
    return isinstance(layer, _POOLS_SPACE) and channels_last(layer) and not getattr(layer, "keepdims", False)


def pads_with_zeros(layer):
    """Whether `layer` surrounds the image with zeros (a constant channel is then no longer constant)."""
    return isinstance(layer, _PADDING)


def is_conv(layer):
    """A plain convolution over channels last with groups=1 (not transposed, depthwise or separable)."""
    return (
        isinstance(layer, CONV)
        and not isinstance(layer, TRANSPOSED + DEPTHWISE + SEPARABLE)
        and getattr(layer, "groups", 1) == 1
        and channels_last(layer)
    )


def is_dense(layer):
    """Whether `layer` is a Dense layer (its kernel's last axis is its output channels)."""
    return isinstance(layer, keras.layers.Dense)


def is_depthwise(layer):
    """A DepthwiseConv with depth_multiplier 1 over channels last: output channel j reads input channel j alone."""
    return isinstance(layer, DEPTHWISE) and layer.depth_multiplier == 1 and channels_last(layer)


def producer_kernel(layer):
    """The name of the kernel whose last axis is `layer`'s output channels (a plain convolution, a Dense, a
    separable convolution's pointwise kernel), or None."""
    if is_conv(layer) or is_dense(layer):
        return "kernel"
    if isinstance(layer, SEPARABLE) and channels_last(layer):
        return "pointwise_kernel"
    return None


def channel_axis(layer, kernel_name):
    """The (negative) axis of `layer`'s kernel `kernel_name` that indexes the channels a channel mask keeps
    or drops: the output channels, or for a depthwise kernel its input channels (each input channel's
    filters), or a transposed convolution's output axis (-2)."""
    depthwise = kernel_name == "depthwise_kernel" or isinstance(layer, DEPTHWISE)
    return -2 if depthwise or isinstance(layer, TRANSPOSED) else -1


def passes_channels(layer):
    """Whether `layer` maps channel j to channel j alone, with no weights or with per-channel weights it can slice."""
    if is_depthwise(layer):
        return True
    if not (per_channel(layer) or pools_space(layer)):
        return False
    return not layer.weights or isinstance(layer, keras.layers.BatchNormalization)


class Stop(Exception):
    """Raised by a `Graph.follow` visit to end the walk; `follow` returns its argument."""


@dataclasses.dataclass
class Graph:
    """A Functional model's top-level layer graph.

    Attributes:
      inputs: {layer name: names of the layers it reads}.
      consumers: {layer name: names of the layers reading it}.
      calls: {layer name: how many times it is called}.
      outputs: the names of the layers producing the model's outputs.
    """

    inputs: dict
    consumers: dict
    calls: dict
    outputs: list

    def single(self, name):
        """Whether layer `name` is called once, on one layer's output."""
        return self.calls.get(name) == 1 and len(self.inputs.get(name, ())) == 1

    def order(self):
        """Layer names in topological order (inputs first)."""
        waiting = {name: len(set(sources)) for name, sources in self.inputs.items()}
        ready = [name for name, count in waiting.items() if count == 0]
        order = []
        while ready:
            name = ready.pop(0)
            order.append(name)
            for consumer in self.consumers.get(name, ()):
                waiting[consumer] -= 1
                if waiting[consumer] == 0:
                    ready.append(consumer)
        return order

    def follow(self, root, visit, state=None):
        """Walks forward, depth first, from layer `root` through the layers its output reaches.

        Args:
          root: the name of the layer the walk starts from.
          visit: `visit(name, source, state) -> (go_on, state)`, called once for
            every layer reached (`source`: the layer it was reached from;
            `state`: what `source`'s visit returned); the walk goes on through
            `name`'s consumers, handing them the returned state, where `go_on`.
            A visit raises `Stop(result)` to end the walk.
          state: the state handed to `root`'s consumers.

        Returns:
          The `result` of the `Stop` that ended the walk, or None.
        """
        stack = [(name, root, state) for name in self.consumers.get(root, ())]
        seen = {root}
        try:
            while stack:
                name, source, state = stack.pop()
                if name in seen:
                    continue
                seen.add(name)
                go_on, state = visit(name, source, state)
                if go_on:
                    stack.extend((consumer, name, state) for consumer in self.consumers.get(name, ()))
        except Stop as stop:
            return stop.args[0]
        return None


def read_graph(model):
    """The `Graph` of a Functional model (converted or plain); None for other models."""
    config = structure.graph_config(model)
    if config is None:
        return None
    inputs = structure.layer_graph(config)
    consumers = {name: [] for name in inputs}
    for name, sources in inputs.items():
        for source in dict.fromkeys(sources):
            consumers.setdefault(source, []).append(name)
    calls = {
        entry["config"].get("name", entry.get("name")): len(entry.get("inbound_nodes") or ())
        for entry in config["layers"]
    }
    return Graph(inputs=inputs, consumers=consumers, calls=calls, outputs=structure.output_layer_names(config))
