"""Conditional layers: each replaces a Keras layer and reads the model's shared trade-off."""

from keras_smart.layers.base import ConditionalLayer
from keras_smart.layers.base import expected_noise
from keras_smart.layers.base import separate_paths
from keras_smart.layers.base import tradeoff_override
from keras_smart.layers.attention import DualMaskMultiHeadAttention
from keras_smart.layers.attention import NoisyMultiHeadAttention
from keras_smart.layers.conditional_kernel import ConditionalKernel
from keras_smart.layers.dual_batch_norm import DualBatchNormalization
from keras_smart.layers.dual_mask import DualMaskConv1D
from keras_smart.layers.dual_mask import DualMaskConv2D
from keras_smart.layers.dual_mask import DualMaskConv2DTranspose
from keras_smart.layers.dual_mask import DualMaskConv3D
from keras_smart.layers.dual_mask import DualMaskDense
from keras_smart.layers.dual_layer_norm import DualLayerNormalization
from keras_smart.layers.dual_mask import DualMaskDepthwiseConv2D
from keras_smart.layers.dual_mask import DualMaskEinsumDense
from keras_smart.layers.dual_mask import DualMaskSeparableConv2D
from keras_smart.layers.film import FiLMDualBatchNormalization
from keras_smart.layers.noise_injection import NoiseInjection
from keras_smart.layers.noisy import NoisyConv1D
from keras_smart.layers.noisy import NoisyConv2D
from keras_smart.layers.noisy import NoisyConv2DTranspose
from keras_smart.layers.noisy import NoisyConv3D
from keras_smart.layers.noisy import NoisyDense
from keras_smart.layers.noisy import NoisyDepthwiseConv2D
from keras_smart.layers.noisy import NoisyEinsumDense
from keras_smart.layers.noisy import NoisySeparableConv2D
from keras_smart.layers.quantized_layers import QuantizedConv1D
from keras_smart.layers.quantized_layers import QuantizedConv2D
from keras_smart.layers.quantized_layers import QuantizedConv2DTranspose
from keras_smart.layers.quantized_layers import QuantizedConv3D
from keras_smart.layers.quantized_layers import QuantizedDense
from keras_smart.layers.quantized_layers import QuantizedDepthwiseConv2D
from keras_smart.layers.quantized_layers import QuantizedEinsumDense
from keras_smart.layers.quantized_layers import QuantizedSeparableConv2D

__all__ = [
    "ConditionalKernel",
    "ConditionalLayer",
    "DualBatchNormalization",
    "DualLayerNormalization",
    "DualMaskConv1D",
    "DualMaskConv2D",
    "DualMaskConv2DTranspose",
    "DualMaskConv3D",
    "DualMaskDense",
    "DualMaskDepthwiseConv2D",
    "DualMaskEinsumDense",
    "DualMaskMultiHeadAttention",
    "DualMaskSeparableConv2D",
    "FiLMDualBatchNormalization",
    "NoiseInjection",
    "NoisyConv1D",
    "NoisyConv2D",
    "NoisyConv2DTranspose",
    "NoisyConv3D",
    "NoisyDense",
    "NoisyDepthwiseConv2D",
    "NoisyEinsumDense",
    "NoisyMultiHeadAttention",
    "NoisySeparableConv2D",
    "QuantizedConv1D",
    "QuantizedConv2D",
    "QuantizedConv2DTranspose",
    "QuantizedConv3D",
    "QuantizedDense",
    "QuantizedDepthwiseConv2D",
    "QuantizedEinsumDense",
    "QuantizedSeparableConv2D",
    "expected_noise",
    "separate_paths",
    "tradeoff_override",
]
