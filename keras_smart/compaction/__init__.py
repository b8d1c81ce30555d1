"""Compaction: a plain model made physically narrower by the output channels its masks drop, same outputs."""

from keras_smart.compaction.channel_masks import check_channel_structured
from keras_smart.compaction.narrow import compact

__all__ = ["check_channel_structured", "compact"]
