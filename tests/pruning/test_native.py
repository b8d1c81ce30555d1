"""Native pruning (both flavours): a pruned weight is zero on every path, the schedule is TF-MOT's, levels only grow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_smart
from keras_smart import _compat
from keras_smart import pruning
from tests import models
from tests.models import keras
from tests.pruning import common


@pytest.mark.parametrize("method", models.METHODS + ("plain",))
def test_one_shot_prune_reaches_the_target_on_every_kernel_and_every_path(method):
    model = common.model(method)
    if method != "plain":
        models.randomize_conditional_state(model, seed=1)
        if method in common.MASK_DENSITY:  # randomize_conditional_state drew new masks; design them again
            keras_smart.design_masks(model, score="random", density=common.MASK_DENSITY[method], seed=3)
    assert pruning.prune(model, 0.7) is model
    sparsity = pruning.kernel_sparsity(model)
    assert set(sparsity) == {
        "conv/kernel",
        f"dw/{_compat.DEPTHWISE_KERNEL}",
        "sep/depthwise_kernel",
        "sep/pointwise_kernel",
        "fc1/kernel",
        "logits/kernel",
    }
    sizes = {name: kernel.size for name, kernel in common.kernels(model).items()}
    for name, value in sparsity.items():
        assert value >= 0.7 - 0.5 / sizes[name], name
        assert value <= 0.7 + 0.5 / sizes[name], f"{name}: pruned more than asked ({value})"
    common.assert_zero_on_every_path(model)
    if method == "smart":
        # Both paths still differ: pruning intersected each mask with one pruning mask.
        conv = model.get_layer("conv")
        assert not np.array_equal(conv.mask_value("kernel_clean_mask"), conv.mask_value("kernel_adv_mask"))


def test_weights_no_path_uses_are_pruned_first_and_kept_weights_are_the_largest():
    smart = keras_smart.convert(models.conv_block_model(), "smart")
    keras_smart.design_masks(smart, score="random", density=(0.4, 0.4), seed=0)
    conv = smart.get_layer("conv")
    kernel_before = conv.kernel.numpy()
    union = (conv.mask_value("kernel_clean_mask") + conv.mask_value("kernel_adv_mask")) > 0
    pruning.prune(smart, 0.5, layers=["conv"])
    kernel = conv.kernel.numpy()
    alive = kernel != 0
    assert np.all(union[alive]), "a weight outside both masks survived"
    assert alive.sum() == min(round(0.5 * kernel.size), union.sum())
    assert np.abs(kernel_before[alive]).min() >= np.abs(kernel_before[union & ~alive]).max()
    np.testing.assert_array_equal(kernel[alive], kernel_before[alive])
    assert pruning.kernel_sparsity(smart)["fc1/kernel"] < 0.5, "layers= restricts what is pruned"


_ORACLE = """
import json, sys
import tensorflow_model_optimization as tfmot
steps, config = json.loads(sys.argv[1])
schedule = tfmot.sparsity.keras.PolynomialDecay(**config)
print(json.dumps([[bool(p), float(s)] for p, s in (schedule(t) for t in steps)]))
"""


def _tfmot_polynomial_decay(steps, **config):
    """[(should_prune, sparsity)] of TF-MOT's own PolynomialDecay at each step: the oracle.

    Under Keras 3 it runs in a tf_keras subprocess: importing TF-MOT here would
    hide whether keras_smart itself ever imports it.
    """
    if _compat.IS_LEGACY:
        import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top

        schedule = tfmot.sparsity.keras.PolynomialDecay(**config)
        return [(bool(p), float(s)) for p, s in (schedule(t) for t in steps)]
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    argument = json.dumps([list(steps), config])
    done = subprocess.run(
        [sys.executable, "-c", _ORACLE, argument], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


class _RecordLevels(keras.callbacks.Callback):
    """(optimizer step, pruning_level, kernel_sparsity) after every batch."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self.rows.append((step, pruning.pruning_level(self.model), pruning.kernel_sparsity(self.model)))


def test_gradual_schedule_is_tf_mot_polynomial_decay_in_optimizer_steps():
    model = common.model("float")  # no path masks: every kernel's sparsity is the level
    schedule = pruning.PolynomialDecay(begin_step=2, end_step=8, initial_sparsity=0.1, power=3, frequency=2)
    pruning.prune(model, 0.6, schedule=schedule)
    assert pruning.pruning_level(model) == 0.0, "before begin_step nothing is pruned"
    zeros_at_start = {name: kernel == 0 for name, kernel in common.kernels(model).items()}
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(model, batch=20), np.arange(20) % 4
    record = _RecordLevels()
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[pruning.UpdatePruning(), record])
    steps = [row[0] for row in record.rows]
    assert steps == list(range(1, 11))
    oracle = _tfmot_polynomial_decay(
        range(11), initial_sparsity=0.1, final_sparsity=0.6, begin_step=2, end_step=8, power=3, frequency=2
    )
    # The level in force after step t: TF-MOT's sparsity at its last pruning step up to t (0 before any).
    expected = [max([s for s in range(t + 1) if oracle[s][0]], default=None) for t in steps]
    expected = [0.0 if s is None else oracle[s][1] for s in expected]
    np.testing.assert_allclose([row[1] for row in record.rows], expected, atol=1e-6)
    sizes = {name: kernel.size for name, kernel in common.kernels(model).items()}
    for (step, level, sparsity), want in zip(record.rows, expected):
        for name, value in sparsity.items():
            assert abs(value - want) <= 0.5 / sizes[name] + 1e-6, (step, name, value, want)
    for name, kernel in common.kernels(model).items():
        assert np.all((kernel == 0)[zeros_at_start[name]]), f"{name}: a pruned weight came back"
    common.assert_zero_on_every_path(model)


def test_pruned_weights_stay_zero_through_adversarial_training():
    smart = common.model("smart", models.sequential_model)  # small: the adversarial train step traces fast
    pruning.prune(smart, 0.5)
    zeros = {name: kernel == 0 for name, kernel in common.kernels(smart).items()}
    smart.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(smart, batch=6), np.arange(6) % 3
    attack = keras_smart.AttackConfig(kind="fgsm", eps=0.1)
    history = smart.fit(
        x,
        y,
        batch_size=6,
        epochs=1,
        verbose=0,
        callbacks=[keras_smart.callbacks.AdversarialCallback(attack=attack), pruning.UpdatePruning()],
    )
    assert "adv_accuracy" in history.history
    for name, kernel in common.kernels(smart).items():
        assert np.all(kernel[zeros[name]] == 0), name
    common.assert_zero_on_every_path(smart)


def test_pruning_again_resumes_from_the_zeros_and_only_grows():
    model = common.model("float")
    pruning.prune(model, 0.3)
    first = {name: kernel == 0 for name, kernel in common.kernels(model).items()}
    pruning.strip_pruning(model)
    assert pruning.pruning_level(model) is None
    pruning.prune(model, 0.6)
    for name, kernel in common.kernels(model).items():
        assert np.all((kernel == 0)[first[name]]), name
    assert min(pruning.kernel_sparsity(model).values()) >= 0.59


def test_pruning_again_replaces_the_settings_of_every_kernel():
    model = common.model("smart")
    pruning.prune(model, 0.3, layers=["conv"])
    pruning.prune(model, 0.5, layers=["fc1"])
    marked = {
        layer.name
        for layer in common.kernel_layers(model)
        if isinstance(layer.get_config().get("kernel_constraint"), dict)
    }
    assert marked == {"fc1"}
    assert pruning.pruning_level(model) == 0.5


def test_the_settings_are_the_kernels_constraints_around_their_own():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, kernel_constraint=keras.constraints.NonNeg(), name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    schedule = pruning.PolynomialDecay(begin_step=0, end_step=10, frequency=5)
    pruning.prune(model, 0.5, schedule=schedule)
    fc = model.get_layer("fc")
    config = fc.get_config()["kernel_constraint"]
    assert config["config"]["target_sparsity"] == 0.5
    assert config["config"]["schedule"] == schedule.get_config()
    assert config["config"]["constraint"]["class_name"] == "NonNeg"
    np.testing.assert_array_equal(fc.kernel_constraint(-np.ones((6, 8), np.float32)), 0.0)  # NonNeg still applies
    clone = keras.models.clone_model(model)  # the settings travel with the config
    assert pruning.pruning_level(clone) == pytest.approx(0.0)
    assert isinstance(clone.get_layer("head").kernel_constraint, pruning.KernelPruning)
    pruning.strip_pruning(model)
    assert isinstance(fc.kernel_constraint, keras.constraints.NonNeg)
    assert model.get_layer("head").kernel_constraint is None


def test_strip_pruning_leaves_a_model_update_pruning_refuses_and_an_unpruned_model_unchanged():
    model = common.model("plain")
    pruning.prune(model, 0.5)
    zeros = {name: kernel == 0 for name, kernel in common.kernels(model).items()}
    assert pruning.strip_pruning(model) is model
    for name, kernel in common.kernels(model).items():
        np.testing.assert_array_equal(kernel == 0, zeros[name], err_msg=name)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = models.inputs_for(model, batch=4), np.arange(4) % 4
    with pytest.raises(ValueError, match="is not pruned: call keras_smart.pruning.prune"):
        model.fit(x, y, verbose=0, callbacks=[pruning.UpdatePruning()])
    unpruned = models.conv_block_model()
    before = [w.numpy().copy() for w in unpruned.weights]
    assert pruning.strip_pruning(unpruned) is unpruned
    for value, weight in zip(before, unpruned.weights):
        np.testing.assert_array_equal(value, weight.numpy())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"target_sparsity": 0.0}, ValueError, "in \\(0, 1\\)"),
        ({"target_sparsity": 1.0}, ValueError, "in \\(0, 1\\)"),
        ({"target_sparsity": "half"}, TypeError, "target_sparsity"),
        ({"target_sparsity": 0.5, "schedule": "poly"}, TypeError, "PolynomialDecay"),
        ({"target_sparsity": 0.5, "layers": ["nope"]}, ValueError, "No prunable layer named \\['nope'\\]"),
        (
            {"target_sparsity": 0.3, "schedule": pruning.PolynomialDecay(initial_sparsity=0.5)},
            ValueError,
            "must not exceed",
        ),
    ],
)
def test_bad_prune_arguments_fail_clearly_and_change_nothing(kwargs, error, match):
    model = common.model("smart")
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(error, match=match):
        pruning.prune(model, **kwargs)
    for value, weight in zip(before, model.weights):
        np.testing.assert_array_equal(value, weight.numpy())
    assert pruning.pruning_level(model) is None


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"begin_step": 5, "end_step": 5}, ValueError, "`end_step` must be an int >= 6"),
        ({"frequency": 0}, ValueError, "`frequency` must be an int >= 1"),
        ({"frequency": 2.5}, TypeError, "`frequency` must be an int"),
        ({"power": 0}, ValueError, "`power` must be > 0"),
        ({"initial_sparsity": 1.0}, ValueError, "`initial_sparsity` must be in \\[0, 1\\)"),
    ],
)
def test_bad_schedules_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        pruning.PolynomialDecay(**kwargs)


def test_a_model_without_prunable_layers_is_rejected():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.ReLU()(inputs))
    with pytest.raises(ValueError, match="no prunable layers"):
        pruning.prune(model, 0.5)

