"""Conditional layers implement TF-MOT's PrunableLayer protocol; prune_low_magnitude accepts a SmartModel."""

import numpy as np
import pytest

import keras_smart
from keras_smart import _compat
from keras_smart import layers as cl
from tests import models
from tests.layers import cases
from tests.models import keras


@pytest.mark.parametrize("cls", cases.CLASSES, ids=cases.IDS)
def test_prunable_weights_are_the_kernels(cls):
    source, _ = cases.source_and_input(cls)
    layer = cls.from_layer(source)
    names = [_compat.weight_name(w) for w in layer.get_prunable_weights()]
    kernels = [layer] if isinstance(layer, cl.ConditionalKernel) else list(getattr(layer, "projections", dict)().values())
    assert names == [n for k in kernels for n in k.kernel_names]  # attention: its projections' kernels, as TF-MOT's rule


@pytest.mark.skipif(not _compat.IS_LEGACY, reason="TF-MOT accepts tf_keras models only (TF_USE_LEGACY_KERAS=1)")
def test_tfmot_prunes_trains_and_strips_a_smart_model():
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    smart = keras_smart.convert(models.conv_block_model(), "smart")
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(smart, pruning_schedule=schedule)
    assert isinstance(pruned, keras_smart.SmartModel)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(smart, batch=8), np.arange(8) % 4
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    keras_smart.set_tradeoff(pruned, 1.0)
    wrapped = [l for l in _compat.flatten_layers(pruned) if isinstance(l, cl.ConditionalLayer)]
    assert wrapped and all(float(l.current_tradeoff()) == 1.0 for l in wrapped), "the wrapped layers read lam"
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    assert isinstance(stripped, keras_smart.SmartModel)
    assert type(stripped.get_layer("conv")) is cl.DualMaskConv2D
    kernel = stripped.get_layer("conv").kernel.numpy()
    assert (kernel == 0).mean() == pytest.approx(0.5, abs=0.02)
    assert keras_smart.get_tradeoff(stripped) == 0.0, "TF-MOT's clone starts a fresh trade-off variable"
    keras_smart.set_tradeoff(stripped, 1.0)
    np.testing.assert_allclose(stripped(x), pruned(x), atol=1e-5)
