"""Native pruning keeps its state in the model: a `.keras` file or BackupAndRestore resumes the schedule exactly."""

import numpy as np
import pytest

from keras_smart import pruning
from tests import models
from tests.models import keras
from tests.pruning import common

_STEPS_PER_EPOCH = 4
# Updates at steps 0, 2, ..., 12: the level grows across every epoch boundary below.
_SCHEDULE = pruning.PolynomialDecay(begin_step=0, end_step=12, initial_sparsity=0.1, frequency=2)


def _pruned_model():
    """The same SMART model every time (seeded), pruned on the schedule and compiled."""
    keras.utils.set_random_seed(0)
    model = common.model("smart")
    pruning.prune(model, 0.6, schedule=_SCHEDULE)
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _fit(model, epochs, callbacks=()):
    x = models.inputs_for(model, batch=4 * _STEPS_PER_EPOCH)
    y = np.arange(len(x)) % 4
    model.fit(
        x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0, callbacks=[pruning.UpdatePruning(), *callbacks]
    )


def _assert_same_pruning(model, reference):
    assert int(model.optimizer.iterations.numpy()) == int(reference.optimizer.iterations.numpy())
    assert pruning.pruning_level(model) == pytest.approx(pruning.pruning_level(reference))
    assert pruning.kernel_sparsity(model) == pytest.approx(pruning.kernel_sparsity(reference))
    kernels, expected = common.kernels(model), common.kernels(reference)
    for name, kernel in kernels.items():
        np.testing.assert_array_equal(kernel == 0, expected[name] == 0, err_msg=name)
        np.testing.assert_allclose(kernel, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    common.assert_zero_on_every_path(model)


def test_a_keras_file_continues_the_schedule_from_its_step(tmp_path):
    reference = _pruned_model()
    _fit(reference, epochs=3)
    assert pruning.pruning_level(reference) == pytest.approx(0.6)

    model = _pruned_model()
    _fit(model, epochs=1)
    model.save(str(tmp_path / "pruned.keras"))
    loaded = keras.models.load_model(str(tmp_path / "pruned.keras"))  # keras_smart's registrations suffice
    assert int(loaded.optimizer.iterations.numpy()) == _STEPS_PER_EPOCH
    assert pruning.pruning_level(loaded) == pytest.approx(pruning.pruning_level(model))
    assert pruning.pruning_level(loaded) < 0.6, "the schedule is still under way"
    assert isinstance(loaded.get_layer("conv").kernel_constraint, pruning.KernelPruning)
    assert loaded.get_layer("conv").kernel_constraint.schedule == _SCHEDULE
    _fit(loaded, epochs=2)
    _assert_same_pruning(loaded, reference)


class _InterruptAt(keras.callbacks.Callback):
    """Raises at the end of epoch `epoch`, before a later callback (BackupAndRestore) saves that epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"interrupted at the end of epoch {epoch}")


@pytest.mark.parametrize("resume_with", ["the same model", "a model built and pruned again"])
def test_backup_and_restore_resumes_the_schedule_exactly(tmp_path, resume_with):
    reference = _pruned_model()
    _fit(reference, epochs=3)

    model = _pruned_model()
    backup_dir = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        # Interrupted after epoch 1 (8 steps) before its backup: the resumed fit restores epoch 0's (4 steps).
        _fit(model, epochs=3, callbacks=[_InterruptAt(1), keras.callbacks.BackupAndRestore(backup_dir)])
    assert int(model.optimizer.iterations.numpy()) == 2 * _STEPS_PER_EPOCH
    if resume_with != "the same model":
        model = _pruned_model()
    _fit(model, epochs=3, callbacks=[keras.callbacks.BackupAndRestore(backup_dir)])
    _assert_same_pruning(model, reference)
