"""What the export tests share: converted models, and LiteRT read independently of keras_smart.export."""

import os

import numpy as np
import pytest

import keras_smart
from keras_smart.layers import base
from tests import models

litert = pytest.importorskip("ai_edge_litert.interpreter")
flatbuffer_utils = pytest.importorskip("ai_edge_litert.tools.flatbuffer_utils")

VARIANTS = {
    "smart": ("smart", {}),
    "smart-blend": ("smart", {"tradeoff_mode": "blend"}),
    "float": ("float", {}),
    "floats": ("floats", {}),
    "oat": ("oat", {}),
}


def converted(variant, seed=0):
    """A conv-block model converted by `variant`, with random state so that each path computes its own function."""
    method, options = VARIANTS[variant]
    smart = keras_smart.convert(models.conv_block_model(), method, **options)
    models.randomize_conditional_state(smart, seed=seed)
    return smart


def run_file(path, x, tradeoff=None):
    """Runs a file in LiteRT's interpreter (default XNNPACK delegate), independently of export's check."""
    runner = litert.Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    feeds = {"input": x}
    if tradeoff is not None:
        feeds["tradeoff"] = np.array([tradeoff], np.float32)
    return runner(**feeds)["output"]


def keras_outputs(model, x, tradeoff):
    with base.expected_noise(), base.tradeoff_override(tradeoff):
        return model(x, training=False).numpy()


def operator_names(path):
    """The operator names a file uses, read with LiteRT's flatbuffer tools (not export's reader)."""
    model = flatbuffer_utils.read_model(str(path))
    return {
        flatbuffer_utils.opcode_to_name(model, operator.opcodeIndex)
        for subgraph in model.subgraphs
        for operator in subgraph.operators
    }


def files(directory):
    return sorted(os.listdir(directory))
