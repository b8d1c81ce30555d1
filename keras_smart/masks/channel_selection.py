"""Channel-structured masks: which whole output channels each path keeps in every channel group.

`design_masks(..., granularity="channel")` scores every weight of a group's
member kernels as for unstructured masks, then sums the scores per channel:
each member's per-channel sums are divided by that member's total score, and
the members' shares added up. Normalising per member lets a small kernel (a
depthwise 3x3 next to its wide 1x1 producer) weigh as much as a large one in
deciding a channel; with "magnitude" the producer's share is its filters' L1
norms (the classic filter-pruning criterion). Each path then keeps its
`keep_count(density, channels)` best channels (the floor and the overlap cap
count channels), and every member's mask keeps or drops whole channel slices.
Kernels outside a group (pinned by the plan, or left dense) keep all-ones masks.
"""

import warnings

import numpy as np

from keras_smart.masks import access
from keras_smart.masks import allocation as allocation_lib
from keras_smart.masks import channels as channels_lib


def check_allocation(allocation):
    """Raises unless `allocation` is "layer": channel masks keep a density of channels per group."""
    allocation_lib.check_allocation(allocation)
    if allocation != "layer":
        raise ValueError(
            'granularity="channel" keeps the density of channels in each channel group: use allocation="layer". '
            f"Received: allocation={allocation!r}"
        )


class ChannelDesign:
    """The channel groups of a model that `design_masks` designs, their member kernels, and their masks.

    Args:
      model: the SmartModel.
      layers: {name: masked layer} (`access.masked_layers`).
      dense: {layer name: masks} of the layers `dense_layers` keeps dense; a
        group with such a member (or with a member that has no masks) keeps
        every channel.
      densities: `layer -> (d_clean, d_adv)` or `(d,)`: the densities of a layer's masks.
    """

    def __init__(self, model, layers, dense, densities):
        self.plan = channels_lib.channel_plan(model)
        self._layers = layers
        self.groups, self.kernels, self._densities = [], [], []
        for group in self.plan.groups:
            if any(name not in layers or name in dense for name in group.layers):
                continue
            self.groups.append((group, list(range(len(self.kernels), len(self.kernels) + len(group.members)))))
            self._densities.append(densities(layers[group.layers[0]]))
            self.kernels.extend(
                allocation_lib.MaskedKernel(layers[m.layer], m.kernel, self._densities[-1]) for m in group.members
            )
        self.pinned = {
            name: self.plan.pinned.get(name, "it is not a layer of the model's top-level graph")
            for name in layers
            if name not in dense and self.plan.group_of(name) is None
        }

    def warn_pinned(self):
        """Warns, one line per layer, about the masked layers whose channels all stay, and why."""
        if self.pinned:
            lines = "".join(f"\n  '{name}': {reason}" for name, reason in self.pinned.items())
            warnings.warn(
                f"design_masks(granularity='channel') keeps every output channel of {len(self.pinned)} masked "
                f"layer(s) (all-ones masks on both paths):{lines}\nSee keras_smart.channel_plan(model).",
                stacklevel=3,
            )

    def masks(self, scores, min_density, max_overlap):
        """{layer name: {mask name: 0/1 array}} for every masked layer: channel masks for the groups'
        members (from `scores`, aligned with `self.kernels`), all ones elsewhere."""
        masks = {
            name: {n: np.ones(shape, np.float32) for n, shape in access.mask_shapes(layer).items()}
            for name, layer in self._layers.items()
        }
        for (group, indices), densities in zip(self.groups, self._densities):
            members = [self.kernels[i] for i in indices]
            channel_scores = [
                channel_sums(group.members, [scores[i][path] for i in indices]) for path in range(len(densities))
            ]
            floor = 0 if min_density is None else allocation_lib.keep_count(min_density, group.channels)
            keep = [max(allocation_lib.keep_count(d, group.channels), floor) for d in densities]
            kept = _kept_channels(channel_scores, keep, max_overlap)
            for member, kernel in zip(group.members, members):
                for mask_name, channel_mask in zip(kernel.mask_names, kept):
                    masks[member.layer][mask_name] = _spread(channel_mask, member.axis, kernel.shape)
        return masks


def channel_sums(members, member_scores):
    """The per-channel score of a group on one path: each member's per-channel sums over its total, summed.

    Example:
      >>> members = [channels_lib.Member("a", "kernel", 1), channels_lib.Member("b", "kernel", 0)]
      >>> channel_sums(members, [np.array([[1.0, 3.0]]), np.array([[2.0], [2.0]])])
      array([0.75, 1.25])
    """
    total = np.zeros(np.shape(member_scores[0])[members[0].axis], np.float64)
    for member, scores in zip(members, member_scores):
        scores = np.asarray(scores, np.float64)
        sums = scores.sum(axis=tuple(a for a in range(scores.ndim) if a != member.axis))
        total += sums / max(float(sums.sum()), 1e-30)
    return total


def _kept_channels(channel_scores, keep, max_overlap):
    """Per path, the 0/1 vector of kept channels; the adversarial path gives way under `max_overlap`."""
    kept = [allocation_lib.top_k_mask(channel_scores[0], keep[0])]
    if len(channel_scores) == 2:
        max_shared = None if max_overlap is None else int(np.floor(max_overlap * min(keep)))
        blocked = None if max_overlap is None else kept[0]
        kept.append(allocation_lib.top_k_mask(channel_scores[1], keep[1], blocked, max_shared))
    return kept


def _spread(channel_mask, axis, shape):
    """A kernel-shaped 0/1 mask whose slice c along `axis` is `channel_mask[c]` throughout."""
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(channel_mask.reshape(view), shape).astype(np.float32)
