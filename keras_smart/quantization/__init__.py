"""Binary-Relax quantization (Li, Wang & Xin, arXiv 2008.13305): relax, train, finalize.

`binary_relax(model, bits)` returns a copy whose conv/dense kernels train
through the relaxed kernel (W + eta * Q(W)) / (1 + eta); `RelaxSchedule` grows
eta during `fit` until the kernels are pure Q; `finalize(model)` makes them
exactly quantized; `report(model)` sizes the result.
"""

from keras_smart.layers.quantized import BITS
from keras_smart.layers.quantized import project
from keras_smart.quantization.finalize import finalize
from keras_smart.quantization.finalize import quantized_layers
from keras_smart.quantization.prepare import binary_relax
from keras_smart.quantization.report import QuantizationReport
from keras_smart.quantization.report import report
from keras_smart.quantization.schedule import RelaxSchedule

__all__ = [
    "BITS",
    "QuantizationReport",
    "RelaxSchedule",
    "binary_relax",
    "finalize",
    "project",
    "quantized_layers",
    "report",
]
