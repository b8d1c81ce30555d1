"""A run, step by step: `train` into a run directory, `evaluate` its trade-off frontier, `export` its bundle.

These are the `keras-smart train | evaluate | export` commands as Python
functions, for scripts and notebooks that want the same run directory (see
`keras_smart.cli.run_dir` for its layout): the examples call them too.

Example:
  >>> from keras_smart.cli import TrainSettings, runs
  >>> settings = TrainSettings(dataset="cifar10", backbone="mobilenet_v2", eps=8 / 255, augment=True)
  >>> runs.EXPORT_TRADEOFFS  # what `export` bakes unless told: the two ends of the frontier
  (0.0, 1.0)

  A run is then `runs.train(settings, "runs/cifar10")`, `runs.evaluate("runs/cifar10")` and
  `runs.export("runs/cifar10", quantize="int8")`.
"""

import json
import os
import pathlib

from absl import logging
import tensorflow as tf

import keras_smart
from keras_smart import backbones
from keras_smart import callbacks as callbacks_lib
from keras_smart import config as config_lib
from keras_smart import data as data_lib
from keras_smart import inputs
from keras_smart import validation
from keras_smart.cli import run_dir as run_dir_lib
from keras_smart.cli import settings as settings_lib

keras = keras_smart.keras

EXPORT_TRADEOFFS = (0.0, 1.0)
DEFAULT_ATTACKS = ("fgsm", "pgd20", "autoattack")
SHUFFLE_BUFFER = 10_000  # training examples shuffled at a time
EXPORT_CHECK_EXAMPLES = 256  # test images each exported file is checked on (and int8 is calibrated on)
# A run with exits: its exit policy is calibrated on the test split's last examples (at most half the split),
# and evaluation uses only the examples before them.
CALIBRATION_EXAMPLES = 500
POLICY = "policy.json"  # the exit policy `evaluate --budget` calibrates, in the run directory


class _EpochEnded(keras.callbacks.Callback):
    """Records that an epoch ended (placed after BackupAndRestore: its checkpoint is written)."""

    def __init__(self):
        super().__init__()
        self.ended = False

    def on_epoch_end(self, epoch, logs=None):
        self.ended = True


def _training_examples(settings, download):
    """The training examples, unbatched and in the data set's order (`_epoch_batches` shuffles and augments them)."""
    return data_lib.load(
        settings.dataset,
        "train",
        data_dir=settings.data_dir,
        download=download,
        max_examples=settings.max_examples or None,
        seed=settings.seed,
    )


def _epoch_batches(examples, settings, step):
    """The batches `fit` reads, each epoch in an order keyed by (settings.seed, `step` as the epoch starts).

    `step` is the optimizer's iteration count, which BackupAndRestore restores
    with the weights; it is read when the epoch's first example is, before the
    epoch's first step. So a resumed run reads each epoch in the order the
    uninterrupted run read it (tf.data's own reshuffling counts the passes
    over the dataset object, which start again at 0 in a new process). The
    examples are shuffled in blocks of `SHUFFLE_BUFFER` (a uniform order for a
    set no larger; like a shuffle buffer's reach for a larger one), then
    augmented (`settings.augment`) with draws keyed by the same key and the
    example's position in the epoch.
    """
    augment = data_lib.augmentation(True) if settings.augment else None

    def one_epoch(_):
        key = tf.stack([tf.constant(settings.seed, tf.int64), tf.cast(step, tf.int64)])
        block_key, augment_key = (tf.random.experimental.stateless_fold_in(key, stream) for stream in (0, 1))

        def shuffle_block(index, block):
            size = tf.shape(tf.nest.flatten(block)[0])[0]
            block_seed = tf.random.experimental.stateless_fold_in(block_key, index)
            order = tf.random.experimental.stateless_shuffle(tf.range(size), block_seed)
            return tf.nest.map_structure(lambda t: tf.gather(t, order), block)

        shuffled = examples.batch(SHUFFLE_BUFFER).enumerate().map(shuffle_block).unbatch()
        if augment is not None:
            shuffled = shuffled.enumerate().map(
                lambda i, example: augment(*example, key=tf.random.experimental.stateless_fold_in(augment_key, i)),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        return shuffled.batch(settings.batch_size)

    batches = tf.data.Dataset.from_tensors(0).flat_map(one_epoch)
    count = int(examples.cardinality())
    if count >= 0:  # known: Keras shows the epoch's length
        batches = batches.apply(tf.data.experimental.assert_cardinality(-(-count // settings.batch_size)))
    return batches.prefetch(tf.data.AUTOTUNE)


def _build_model(settings, run_eagerly):
    input_shape, class_names = data_lib.info(settings.dataset, settings.data_dir)
    base = backbones.build(settings.backbone, input_shape, len(class_names))
    if settings.exits:  # before convert: the heads are converted with the trunk, one training path
        base = keras_smart.exits.attach(base, after=list(settings.exits))
    options = {"tradeoff_mode": settings.tradeoff_mode} if settings.method == "smart" and settings.tradeoff_mode else {}
    model = keras_smart.convert(base, settings.method, **options)
    model.compile(
        keras.optimizers.Adam(settings.learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        run_eagerly=run_eagerly,
    )
    return model


def _training_callbacks(settings, dataset):
    """AdversarialCallback, and MaskUpdate for the masked methods."""
    adversarial = settings.adversarial_config()
    found = [
        callbacks_lib.AdversarialCallback(
            attack=adversarial.attack,
            tradeoffs=adversarial.tradeoffs,
            sampling=adversarial.sampling,
            clean_share=adversarial.clean_share,
            eps_schedule=settings.eps_warmup or None,
            seed=settings.seed,
            loss=adversarial.loss,
            recalibrate=settings.recalibrate,
        )
    ]
    if settings.method in settings_lib.MASKED_METHODS:
        found.append(
            callbacks_lib.MaskUpdate(
                dataset.take(4), score=settings.mask_score, density=settings.mask_density(),
                allocation=settings.mask_allocation, min_density=settings.min_density,
                warmup_epochs=settings.mask_warmup, seed=settings.seed,
            )
        )
    return found


def _run_dir_callbacks(run_dir, planned):
    """What `fit` writes into the run directory: the checkpoint, TensorBoard logs, history.csv."""
    return [
        keras.callbacks.BackupAndRestore(str(run_dir / run_dir_lib.BACKUP)),
        keras.callbacks.TensorBoard(str(run_dir / run_dir_lib.LOGS)),
        keras.callbacks.CSVLogger(str(run_dir / run_dir_lib.HISTORY), append=planned == run_dir_lib.RESUME),
    ]


def train(settings, run_dir, *, overwrite=False, download=False, run_eagerly=False, extra_callbacks=(), verbose=1):
    """Converts a backbone and trains it once-for-all into `run_dir`; resumes an interrupted run there.

    Nothing is written into `run_dir` before the settings, the directory, the
    data and the model have all been checked or built; if training then fails
    before its first epoch has ended, what this call wrote is removed (so a
    corrected command is not refused as "another run"). An interrupted run
    that had finished an epoch is kept, and resumes when `train` is called
    again with the same settings.

    Args:
      settings: a `TrainSettings`.
      run_dir: the run directory (created if needed).
      overwrite: replace a finished run (or another run) in `run_dir`.
      download: let tensorflow-datasets download a data set that is not prepared.
      run_eagerly: compile the model with run_eagerly (no train-step graph to
        build: slower per step, quicker for smoke runs of large backbones).
      extra_callbacks: more Keras callbacks for `fit`.
      verbose: Keras' progress bar setting.

    Returns:
      The trained SmartModel (also saved as `run_dir/model.keras`; its
      `history` is the `fit` History of this call).

    Raises:
      RunExistsError: `run_dir` holds a finished run, or an unfinished run
        with other settings, and overwrite is False; or it is a non-empty
        directory that is not a keras-smart run (also with overwrite).
      OutputDirError: `run_dir` is a file, or cannot be created or written.
      keras_smart.data.DataNotAvailableError: the data set is not prepared
        and download is False.
    """
    run_dir = pathlib.Path(run_dir)
    run_dir_lib.check_output_dir(run_dir)
    planned = run_dir_lib.plan(run_dir, settings, overwrite)
    if planned == run_dir_lib.RESUME:
        logging.info("Resuming the interrupted run in %s", run_dir)
    keras.utils.set_random_seed(settings.seed)
    examples = _training_examples(settings, download)
    model = _build_model(settings, run_eagerly)
    dataset = _epoch_batches(examples, settings, model.optimizer.iterations)
    epoch_ended = _EpochEnded()
    backup, *written = _run_dir_callbacks(run_dir, planned)
    fit_callbacks = [*_training_callbacks(settings, dataset), backup, epoch_ended, *written, *extra_callbacks]
    undo = run_dir_lib.prepare(run_dir, settings, planned)  # the first write into run_dir
    try:
        model.fit(dataset, epochs=settings.epochs, callbacks=fit_callbacks, verbose=verbose, shuffle=False)
    except BaseException:  # also KeyboardInterrupt: a run with no finished epoch has nothing to resume
        if undo is not None and not epoch_ended.ended:
            undo()
        raise
    _save_atomically(model, run_dir / run_dir_lib.MODEL)
    return model


def _save_atomically(model, path):
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    model.save(str(partial))
    os.replace(partial, path)


def load_run(run_dir):
    """A trained run's (model, settings); FileNotFoundError when `run_dir` holds no finished run."""
    settings = run_dir_lib.finished_settings(run_dir)
    return keras.models.load_model(str(pathlib.Path(run_dir) / run_dir_lib.MODEL)), settings


def _test_arrays(settings, max_examples, download):
    """The test split as (x, y) arrays (evaluation and the export check need them in memory)."""
    dataset = data_lib.load(settings.dataset, "test", batch_size=1024, data_dir=settings.data_dir,
                            download=download, max_examples=max_examples or None)
    return inputs.to_arrays(dataset, max_examples=max_examples or None)


def evaluate(run_dir, *, tradeoffs=config_lib.EVALUATION_TRADEOFFS, attacks=None, eps=None,
             max_examples=1000, batch_size=256, seed=0, attack_options=None, progress=True, download=False,
             budget=None):
    """The trade-off report of a trained run, written to `run_dir/report/`.

    A run trained with exits is evaluated under its exit policy. With
    `budget`, the policy is calibrated first (`keras_smart.exits.calibrate`,
    at the largest of `tradeoffs`) on held-out test examples: the test split's
    last `CALIBRATION_EXAMPLES` (at most half the split), which evaluation then
    leaves out (it takes up to `max_examples` of the examples before them);
    the policy is written to `run_dir/policy.json`, and report.json's
    settings["exit_calibration"] says which examples calibrated it. Without
    `budget`, the run's policy.json is used, with the same split.

    Args:
      run_dir: a run directory `train` finished.
      tradeoffs: the trade-offs evaluated, one report row each.
      attacks: `keras_smart.evaluate_tradeoff`'s attack names (None: its
        default, which differs for a multi-exit model).
      eps: the attack budget (None: the run's training eps).
      max_examples: test examples evaluated on (0 or None: the whole split, less
        a multi-exit run's calibration examples).
      batch_size, seed, progress: as in `keras_smart.evaluate_tradeoff`.
      attack_options: overrides of `keras_smart.evaluation.DEFAULT_ATTACK_OPTIONS`
        (AutoAttack's standard settings), e.g. {"square": {"queries": 1000}}.
      download: let tensorflow-datasets download a data set that is not prepared.
      budget: for a run with exits: calibrate its exit policy to this expected
        share of the full model's MACs, in (0, 1].

    Returns:
      The `TradeoffReport`; report.json, report.md and frontier.png are written.

    Raises:
      FileNotFoundError: `run_dir` holds no finished run.
      ValueError: `eps` does not suit the run's inputs, `budget` for a run
        without exits or outside (0, 1], a run with exits with neither `budget`
        nor a policy.json (checked before any work).
    """
    settings = run_dir_lib.finished_settings(run_dir)
    eps = settings.eps if eps is None else eps
    config_lib.AttackConfig(eps=eps, norm=settings.norm)  # eps checked for the run's inputs before any work
    budget = _check_budget(run_dir, settings, budget)
    report_dir = pathlib.Path(run_dir) / run_dir_lib.REPORT
    run_dir_lib.check_output_dir(report_dir)
    model, settings = load_run(run_dir)
    data, policy, calibration = _evaluation_data(model, run_dir, settings, tuple(tradeoffs), budget, max_examples,
                                                 download)
    report = keras_smart.evaluate_tradeoff(
        model, data, tradeoffs=tuple(tradeoffs), attacks=None if attacks is None else tuple(attacks),
        eps=eps, norm=settings.norm, batch_size=batch_size, seed=seed, attack_options=attack_options,
        progress=progress, policy=policy,
    )
    if calibration is not None:
        report.settings["exit_calibration"] = calibration
    report_dir.mkdir(exist_ok=True)
    (report_dir / "report.json").write_text(report.to_json())
    (report_dir / "report.md").write_text(report.to_markdown())
    report.plot(str(report_dir / "frontier.png"))
    if budget is not None:
        (pathlib.Path(run_dir) / POLICY).write_text(policy.to_json() + "\n")
    return report


def _check_budget(run_dir, settings, budget):
    """`budget` checked against the run: only for a run with exits, which needs it or its policy.json."""
    if budget is None:
        if settings.exits:
            read_policy(run_dir, settings, "evaluating it")  # fails now when there is none
        return None
    if not settings.exits:
        raise ValueError(
            f"--budget calibrates the exit policy of a run trained with --exits; {run_dir} has no exits."
        )
    return validation.check_real(
        budget, "budget", low=0.0, high=1.0, low_open=True, meaning="(a share of the full model's MACs)"
    )


def _evaluation_data(model, run_dir, settings, tradeoffs, budget, max_examples, download):
    """(evaluation (x, y), exit policy or None, what calibrated a new policy or None)."""
    if not settings.exits:
        return _test_arrays(settings, max_examples, download), None, None
    x, y = _test_arrays(settings, 0, download)
    held_out = min(CALIBRATION_EXAMPLES, len(x) // 2)
    evaluated = len(x) - held_out if not max_examples else min(max_examples, len(x) - held_out)
    if budget is None:
        return (x[:evaluated], y[:evaluated]), read_policy(run_dir, settings, "evaluating it"), None
    tradeoff = max(tradeoffs)
    keras_smart.set_tradeoff(model, tradeoff)
    policy = keras_smart.exits.calibrate(model, (x[-held_out:], y[-held_out:]), budget=budget)
    calibration = {
        "split": "test", "examples": [len(x) - held_out, len(x)], "evaluated": [0, evaluated],
        "budget": budget, "tradeoff": tradeoff,
    }
    logging.info("Exit policy calibrated at trade-off %g on test examples %d-%d; evaluated on examples 0-%d.",
                 tradeoff, len(x) - held_out, len(x) - 1, evaluated - 1)
    return (x[:evaluated], y[:evaluated]), policy, calibration


def read_policy(run_dir, settings, purpose):
    """The exit policy `evaluate --budget` wrote into a run with exits; ValueError (saying how to make it) if none.

    `purpose` says what needs it, e.g. "exporting it".
    """
    path = pathlib.Path(run_dir) / POLICY
    if not path.exists():
        raise ValueError(
            f"{run_dir} was trained with exits after {list(settings.exits)}, and {purpose} needs its exit policy, "
            f"which it does not have yet: run keras-smart evaluate --run_dir={run_dir} --budget=0.6 (the expected "
            "share of the full model's MACs) to calibrate one."
        )
    return keras_smart.exits.ExitPolicy.from_json(path.read_text())


def export(run_dir, *, tradeoffs=EXPORT_TRADEOFFS, quantize=None, runtime_tradeoff=False, overwrite=True,
           download=False):
    """The Android bundle of a trained run, written to `run_dir/bundle/`.

    Each file is checked against the Keras model on the run's first test
    images (int8 is calibrated on them too); the bundle carries the measured
    accuracies of `run_dir/report/report.json` when `evaluate` has run. A run
    trained with exits gives a staged bundle (a file per stage and trade-off,
    see `keras_smart.export.bundle`) routed by the run's policy.json, which
    `evaluate(..., budget=...)` writes.

    Args:
      run_dir: a run directory `train` finished.
      tradeoffs: the trade-offs baked, a LiteRT file each.
      quantize: None, "dynamic", "float16" or "int8".
      runtime_tradeoff: one file with the trade-off as a second input instead.
      overwrite: replace an earlier bundle.
      download: let tensorflow-datasets download a data set that is not prepared.

    Returns:
      What `keras_smart.export.bundle` returns (the metadata written to smart.json).

    Raises:
      FileNotFoundError: `run_dir` holds no finished run.
      ValueError: a run with exits but no policy.json yet.
      keras_smart.export.ExportError: a file failed its check against Keras.
    """
    run_dir = pathlib.Path(run_dir)
    settings = run_dir_lib.finished_settings(run_dir)
    policy = read_policy(run_dir, settings, "exporting it") if settings.exits else None
    run_dir_lib.check_output_dir(run_dir / run_dir_lib.BUNDLE)
    model, settings = load_run(run_dir)
    report_path = run_dir / run_dir_lib.REPORT / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    _, labels = data_lib.info(settings.dataset, settings.data_dir)
    test_images = _test_arrays(settings, EXPORT_CHECK_EXAMPLES, download)[0]
    return keras_smart.export.bundle(
        model, str(run_dir / run_dir_lib.BUNDLE), tradeoffs=tuple(tradeoffs), labels=labels, report=report,
        quantize=quantize, representative_data=test_images if quantize == "int8" else None,
        check_data=test_images, runtime_tradeoff=runtime_tradeoff, overwrite=overwrite, policy=policy,
    )


def describe_bundle(metadata, bundle_dir):
    """What `export` wrote, as text: one line per file (trade-off, quantization, size, executed MACs, its check)."""
    lines = [f"bundle:  {bundle_dir} (labels.txt, smart.json)"]
    if "staged" in metadata:
        after = [e["after"] for e in metadata["staged"]["exits"] if e["after"]]
        lines.append(f"  staged: {len(after) + 1} stages per trade-off (exits after {', '.join(after)}), each "
                     "stopping when its prediction's entropy is below the policy's threshold")
    for entry in metadata["files"]:
        tradeoff = "every λ (input 'tradeoff')" if entry["tradeoff"] is None else f"λ = {entry['tradeoff']:g}"
        if entry.get("stage"):
            tradeoff = f"stage {entry['stage']}" + ("" if entry["tradeoff"] is None else f" of {tradeoff}")
        check = entry["check"]
        agreement = f"top-1 agreement {100 * check['top1_agreement']:.1f}% on {check['samples']} test images"
        executed = "" if entry.get("executed_macs") is None else f"{entry['executed_macs']:,} MACs executed, "
        lines.append(f"  {entry['file']}: {tradeoff}, {entry['quantize'] or 'float32'}, "
                     f"{entry['size_bytes'] / 1e3:.0f} kB, {executed}{agreement}")
    return "\n".join(lines)
