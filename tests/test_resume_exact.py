"""Exact resume: `keras-smart train` interrupted mid-epoch and run again ends where an uninterrupted run ends.

The run is the default SMART method with mask design (snip scores under the
training attack, after a dense warm-up epoch), PGD with a random start,
batch-norm recalibration at the end. Every source of randomness is keyed by
state the checkpoint restores: the PGD start and the trade-off draws by the
optimizer step, each epoch's data order by the step it starts at, the masks
by the epoch they are designed at.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_smart import cli
from keras_smart.cli import runs
from tests.models import keras

# 2 steps per epoch; masks designed at the start of epoch 1; one PGD step from a random start.
SETTINGS = cli.TrainSettings(
    epochs=2, max_examples=32, batch_size=16, attack_steps=1, eps_warmup=1, mask_warmup=1, recalibrate=True
)


class _StopMidEpoch(keras.callbacks.Callback):
    """Interrupts the run after step `batch` of `epoch`, as Ctrl-C would (no checkpoint for that epoch)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.stop_at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.stop_at:
            raise KeyboardInterrupt("simulated Ctrl-C")


def _train(run_dir, **kwargs):
    # Eager steps: no train-step graph to build three times (a third of the graph run's CPU time). The
    # graph run is keyed the same way: the seeds are tensors read from the optimizer's step in both.
    return cli.train(SETTINGS, run_dir, verbose=0, run_eagerly=True, **kwargs)


def _weights(model):
    return [(v.name, v.numpy()) for v in model.weights]


def test_a_run_interrupted_mid_epoch_and_resumed_ends_with_the_uninterrupted_weights_and_masks(tmp_path):
    assert SETTINGS.method == "smart" and SETTINGS.mask_score == "snip" and SETTINGS.attack_schedule == "fixed"
    uninterrupted = _weights(_train(tmp_path / "uninterrupted"))
    with pytest.raises(KeyboardInterrupt):  # after the masks were designed, before the epoch's checkpoint
        _train(tmp_path / "resumed", extra_callbacks=[_StopMidEpoch(epoch=1, batch=0)])
    resumed = _weights(_train(tmp_path / "resumed"))
    assert [name for name, _ in resumed] == [name for name, _ in uninterrupted]
    assert any("mask" in name for name, _ in resumed)
    for (name, expected), (_, actual) in zip(uninterrupted, resumed):
        np.testing.assert_array_equal(actual, expected, err_msg=name)  # bit for bit: the same ops on the same data


def test_each_epoch_reads_the_order_and_augmentation_its_starting_step_keys():
    settings = cli.TrainSettings(max_examples=24, batch_size=8, augment=True)
    examples = runs._training_examples(settings, download=False)
    step = tf.Variable(0, dtype=tf.int64)
    batches = runs._epoch_batches(examples, settings, step)

    def epoch():
        return [x.numpy() for x, _ in batches]

    first, again = epoch(), epoch()
    step.assign(3)  # the next epoch starts at step 3
    following = epoch()
    assert len(first) == 3 == int(batches.cardinality())
    np.testing.assert_array_equal(np.stack(again), np.stack(first))
    assert not np.array_equal(np.stack(following), np.stack(first))
    labels = sorted(int(label) for _, y in batches for label in y)
    assert labels == sorted(int(label) for _, label in examples), "every example once per epoch"
