"""Conditional layers: each replaces a Keras layer and reads the model's shared trade-off."""

from keras_smart.layers.base import ConditionalLayer
from keras_smart.layers.base import expected_noise
from keras_smart.layers.base import separate_paths
from keras_smart.layers.base import tradeoff_override
from keras_smart.layers.conditional_kernel import ConditionalKernel
from keras_smart.layers.dual_batch_norm import DualBatchNormalization
from keras_smart.layers.dual_mask import DualMaskConv2D
from keras_smart.layers.dual_mask import DualMaskDense
from keras_smart.layers.dual_mask import DualMaskDepthwiseConv2D
from keras_smart.layers.dual_mask import DualMaskSeparableConv2D
from keras_smart.layers.film import FiLMDualBatchNormalization
from keras_smart.layers.noisy import NoisyConv2D
from keras_smart.layers.noisy import NoisyDense
from keras_smart.layers.noisy import NoisyDepthwiseConv2D
from keras_smart.layers.noisy import NoisySeparableConv2D

__all__ = [
    "ConditionalKernel",
    "ConditionalLayer",
    "DualBatchNormalization",
    "DualMaskConv2D",
    "DualMaskDense",
    "DualMaskDepthwiseConv2D",
    "DualMaskSeparableConv2D",
    "FiLMDualBatchNormalization",
    "NoisyConv2D",
    "NoisyDense",
    "NoisyDepthwiseConv2D",
    "NoisySeparableConv2D",
    "expected_noise",
    "separate_paths",
    "tradeoff_override",
]
