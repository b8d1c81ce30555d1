"""Which output channels of a model's kernel layers can be dropped whole, which drop together, and why not.

`channel_plan` reads the graph of a Functional model (converted or plain, both
Keras flavours) and follows each kernel layer's output channels forward
through the layers that keep channels apart (`channel_layers.per_channel`):
- a channel can be dropped if every layer it reaches computes with it as an
  input channel: a convolution, a dense layer (also after `Flatten`), the
  depthwise side of a separable convolution, or any of these after global
  pooling;
- a depthwise convolution with depth_multiplier 1 joins the channel: its
  channel i is dropped with its producer's channel i, and its own output
  must end at such consumers too;
- anything else (a residual addition, a concatenation, the model's output, a
  layer called twice, a nested model) pins the producer: all its output
  channels stay.
The plan is static: it says nothing about which channels a mask keeps.
"""

import collections
import dataclasses

from keras_smart import _compat
from keras_smart import registry
from keras_smart.masks import channel_layers

keras = _compat.keras

# Kernel layers whose channels are followed (in Keras 3 the transposed, depthwise and separable
# convolutions do not subclass Conv2D; in tf_keras they do, as do Conv1DTranspose and Conv3DTranspose).
_FOLLOWED = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv2DTranspose,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)
_OTHER_TRANSPOSED = tuple(
    getattr(keras.layers, n) for n in ("Conv1DTranspose", "Conv3DTranspose") if hasattr(keras.layers, n)
)
_MERGING = tuple(
    getattr(keras.layers, n)
    for n in ("Concatenate", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Dot")
    if hasattr(keras.layers, n)
)


class Member(collections.namedtuple("Member", ["layer", "kernel", "axis"])):
    """A kernel whose slices along `axis` are the group's channels: (layer name, kernel name, axis)."""

    __slots__ = ()


class Consumer(collections.namedtuple("Consumer", ["layer", "kernel", "axis", "flattened"])):
    """A kernel that takes the group's channels as inputs along `axis`.

    `flattened`: a `Flatten` (channels last) lies between, so input row
    `position * channels + c` of the dense kernel belongs to channel c.
    """

    __slots__ = ()


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Output channels that are kept or dropped together.

    Attributes:
      members: the producer's kernel first, then the depthwise kernels that
        join it, as `Member`s; a mask drops channel c by zeroing slice c of
        every member.
      channels: how many channels the group has.
      consumers: the kernels that take the channels as inputs (`Consumer`s).
      padded: names of the consumers that see a dropped channel through zero
        padding (their own "same" padding with a kernel wider than one, or a
        padding layer on the way): a dropped channel is constant (bias and
        batch-norm shift), not zero, so it is foldable into their bias only
        where that constant is zero; compaction keeps one channel of the
        group to carry the others' non-zero constants into them.
    """

    members: tuple
    channels: int
    consumers: tuple
    padded: tuple = ()

    @property
    def layers(self):
        """The names of the member layers, producer first."""
        return tuple(m.layer for m in self.members)


@dataclasses.dataclass(frozen=True)
class ChannelPlan:
    """Where whole output channels can be dropped in a model (see `channel_plan`).

    Attributes:
      groups: the `ChannelGroup`s, in graph order.
      pinned: {layer name: why its output channels cannot be dropped}, for
        every kernel layer in no group.
    """

    groups: tuple
    pinned: dict

    def group_of(self, layer_name):
        """The group `layer_name` is a member of, or None (pinned, or not a kernel layer)."""
        for group in self.groups:
            if layer_name in group.layers:
                return group
        return None


def channel_plan(model):
    """Which kernel layers of `model` may drop whole output channels, grouped, and why the others may not.

    Args:
      model: a Functional model (a SmartModel from `convert`, or a plain one)
        with channels-last layers.

    Returns:
      A `ChannelPlan`: `groups` (each a producer kernel, the depthwise
      convolutions that follow its channels, their channel count and the
      kernels consuming them) and `pinned` ({layer name: reason}).

    Raises:
      ValueError: `model` is not a Functional model.

    Example:
      >>> plan = keras_smart.channel_plan(smart)  # conv -> bn -> pool -> logits
      >>> plan.group_of("conv").members, plan.group_of("conv").channels
      ((Member(layer='conv', kernel='kernel', axis=3),), 8)
      >>> plan.pinned
      {'logits': "it produces the model's output"}
    """
    graph = channel_layers.read_graph(model)
    if graph is None:
        raise ValueError(
            f"`channel_plan` reads a Functional model's graph; model '{getattr(model, 'name', model)}' "
            f"({type(model).__name__}) is not one. Build it with the Functional API (keras.Model(inputs, "
            "outputs)) or as a keras.Sequential and pass it through keras_smart.convert."
        )
    return _Planner(model, graph).plan()


class _Planner:
    """Follows each kernel layer's output channels through a model's `channel_layers.Graph`."""

    def __init__(self, model, graph):
        self.graph = graph
        self.layers = {layer.name: layer for layer in model.layers}

    def plan(self):
        groups, pinned, grouped = [], {}, set()
        for name in self.graph.order():
            layer = self.layers.get(name)
            if layer is None or name in grouped or not registry.kernel_names(layer):
                continue
            member, reason = self._producer(name, layer)
            if reason is None:
                group, reason = self._follow(name, member)
            if reason is not None:
                pinned[name] = reason
                continue
            groups.append(group)
            grouped.update(group.layers)
        pinned.update(self._nested_kernel_layers())
        return ChannelPlan(groups=tuple(groups), pinned=pinned)

    def _nested_kernel_layers(self):
        """{name: reason} for the kernel layers inside nested models (the analysis reads the top level)."""
        pinned = {}
        for outer in self.layers.values():
            if isinstance(outer, keras.Model):
                for inner in _compat.flatten_layers(outer):
                    if registry.kernel_names(inner):
                        pinned[inner.name] = (
                            f"it is inside the nested model '{outer.name}' (channels are followed through the "
                            "top-level graph only)"
                        )
        return pinned

    def _producer(self, name, layer):
        """(its `Member`, None) for a layer whose output channels can be dropped, else (None, reason)."""
        reason = _unsupported(layer) or (
            "it is called more than once (a shared layer)" if self.graph.calls.get(name, 0) > 1 else None
        )
        if reason is not None:
            return None, reason
        kernel_name = registry.kernel_names(layer)[-1]  # a separable convolution's pointwise kernel
        rank = len(getattr(layer, kernel_name).shape)
        return Member(name, kernel_name, rank + channel_layers.channel_axis(layer, kernel_name)), None

    def _follow(self, name, member):
        """(the `ChannelGroup` of the producer `name`, None), or (None, why its channels must stay)."""
        if name in self.graph.outputs:
            return None, "it produces the model's output"
        members, consumers, padded = [member], [], []

        def visit(current, source, state):
            flat, padding, via = state
            step, reason = self._step(current, source, flat)
            if reason is not None:
                raise channel_layers.Stop(reason + (f" (through '{via}')" if via else ""))
            kind, value = step
            if kind == "consumer":
                consumers.append(value)
                if padding or _pads(self.layers[current]):
                    padded.append(current)
                return False, None
            if kind == "join":
                members.append(value)
                via, padding = current, False
            else:
                flat = flat or kind == "flatten"
                padding = (padding or channel_layers.pads_with_zeros(self.layers[current])) and kind == "through"
            if current in self.graph.outputs:
                raise channel_layers.Stop(f"its output reaches the model's output through '{current}'")
            return True, (flat, padding, via)

        reason = self.graph.follow(name, visit, (False, False, None))
        if reason is not None:
            return None, reason
        channels = int(getattr(self.layers[name], member.kernel).shape[member.axis])
        return ChannelGroup(tuple(members), channels, tuple(consumers), tuple(dict.fromkeys(padded))), None

    def _step(self, name, source, flat):
        """What layer `name`, fed the channels by `source`, does with them: ((kind, value), None) or
        (None, reason). Kinds: "through" (per channel), "pool", "flatten", "join" (a `Member`),
        "consumer" (a `Consumer`)."""
        layer = self.layers.get(name)
        label = f"'{name}' ({type(layer).__name__})"
        if layer is None or isinstance(layer, keras.Model):
            return None, f"its output feeds the nested model '{name}'"
        if self.graph.calls.get(name, 0) > 1:
            return None, f"its output feeds {label}, which is called more than once"
        if isinstance(layer, keras.layers.Add):
            return None, f"its output feeds the residual addition '{name}'"
        if isinstance(layer, _MERGING):
            return None, f"its output feeds {label}, which mixes channels"
        if channel_layers.per_channel(layer):
            return ("through", None), None
        if isinstance(layer, keras.layers.Flatten) and channel_layers.channels_last(layer):
            return (("flatten", None), None) if not flat else (None, f"its output feeds {label} twice flattened")
        if channel_layers.pools_space(layer) and not flat:
            return ("pool", None), None
        if not registry.kernel_names(layer):
            return None, f"its output feeds {label}, which does not keep channels apart"
        reason = _unsupported(layer)
        if reason is None and flat and not isinstance(layer, keras.layers.Dense):
            reason = "it follows a Flatten (only Dense layers may)"
        if reason is not None:
            return None, f"its output feeds {label}: {reason}"
        if channel_layers.is_depthwise(layer):
            return ("join", Member(name, registry.kernel_names(layer)[0], 2)), None
        kernel_name = registry.kernel_names(layer)[0]
        rank = len(getattr(layer, kernel_name).shape)
        axis = rank - 1 if isinstance(layer, keras.layers.Conv2DTranspose) else max(rank - 2, 0)
        if isinstance(layer, keras.layers.SeparableConv2D):
            axis = 2
        return ("consumer", Consumer(name, kernel_name, axis, flat)), None


def _unsupported(layer):
    """Why a kernel layer's channels are not followed (as producer or consumer), or None."""
    kind = type(layer).__name__
    if isinstance(layer, _OTHER_TRANSPOSED) or not isinstance(layer, _FOLLOWED):
        return f"{kind} layers are not channel-structured"
    if not channel_layers.channels_last(layer):
        return "data_format='channels_first'"
    if getattr(layer, "groups", 1) > 1:
        return f"grouped convolution (groups={layer.groups})"
    if isinstance(layer, channel_layers.DEPTHWISE) and not channel_layers.is_depthwise(layer):
        return f"depth_multiplier {layer.depth_multiplier}"
    return None


def _pads(layer):
    """Whether a consumer's own zero padding reaches past the image (kernel wider than one, not "valid")."""
    kernel_size = getattr(layer, "kernel_size", (1,))
    return getattr(layer, "padding", "valid") != "valid" and any(k > 1 for k in kernel_size)
