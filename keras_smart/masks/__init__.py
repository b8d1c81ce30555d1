"""Masks of SMART (two per kernel: clean and adversarial path) and FLOATS (one): design, access, counting.

The flow of `design_masks`: `scores` ranks each kernel's weights,
`allocation` decides how many each kernel keeps per path and picks them (top-k,
overlap cap), `access` writes them into the model; `counting` reports the
non-zero weights and MACs each path computes with. Channel-structured masks
(`granularity="channel"`) read `channels` (which output channels can be dropped
together, `channel_plan`) and keep whole channels (`channel_selection`).
"""

from keras_smart.masks.access import get_masks
from keras_smart.masks.access import set_masks
from keras_smart.masks.channels import channel_plan
from keras_smart.masks.counting import NonzeroCount
from keras_smart.masks.counting import count_nonzero
from keras_smart.masks.design import design_masks

__all__ = ["NonzeroCount", "channel_plan", "count_nonzero", "design_masks", "get_masks", "set_masks"]
