"""keras_smart: once-for-all adversarially robust, sparse Keras models with an in-situ trade-off."""

from keras_smart import _compat
from keras_smart import attacks
from keras_smart import backbones
from keras_smart import callbacks
from keras_smart import data
from keras_smart import evaluation
from keras_smart import exits
from keras_smart import export
from keras_smart import layers
from keras_smart import noise
from keras_smart import pruning
from keras_smart import quantization
from keras_smart.config import AdversarialConfig
from keras_smart.config import AttackConfig
from keras_smart.config import MaskConfig
from keras_smart.config import Method
from keras_smart.config import TradeoffMode
from keras_smart.conversion import UnconvertedLayersWarning
from keras_smart.conversion import convert
from keras_smart.conversion import get_tradeoff
from keras_smart.conversion import set_tradeoff
from keras_smart.conversion import strip
from keras_smart.evaluation import TradeoffReport
from keras_smart.evaluation import evaluate_tradeoff
from keras_smart.masks import NonzeroCount
from keras_smart.masks import channel_plan
from keras_smart.masks import count_nonzero
from keras_smart.masks import design_masks
from keras_smart.masks import get_masks
from keras_smart.masks import set_masks
from keras_smart.noise import ensemble
from keras_smart.recalibration import recalibrate_batchnorm
from keras_smart.training import SmartModel
from keras_smart.version import __version__

KERAS_FLAVOUR = _compat.FLAVOUR
# The Keras module of the active flavour (Keras 3, or tf_keras under TF_USE_LEGACY_KERAS=1):
# `from keras_smart import keras` builds models that `convert` accepts in either flavour.
keras = _compat.keras

__all__ = [
    "AdversarialConfig",
    "AttackConfig",
    "KERAS_FLAVOUR",
    "MaskConfig",
    "Method",
    "NonzeroCount",
    "SmartModel",
    "TradeoffMode",
    "TradeoffReport",
    "UnconvertedLayersWarning",
    "__version__",
    "attacks",
    "backbones",
    "callbacks",
    "channel_plan",
    "convert",
    "count_nonzero",
    "data",
    "design_masks",
    "ensemble",
    "evaluate_tradeoff",
    "evaluation",
    "exits",
    "export",
    "get_masks",
    "get_tradeoff",
    "keras",
    "layers",
    "noise",
    "pruning",
    "quantization",
    "recalibrate_batchnorm",
    "set_masks",
    "set_tradeoff",
    "strip",
]
