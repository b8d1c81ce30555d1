"""The `keras-smart` command line: train | evaluate | export | demo.

  keras-smart train --dataset=digits --backbone=digits_cnn --method=smart --epochs=10 --output_dir=runs/smart
  keras-smart evaluate --run_dir=runs/smart --attacks=fgsm,pgd20,autoattack
  keras-smart export --run_dir=runs/smart --quantize=int8
  keras-smart demo

A run directory holds `config.json` (the training settings), `model.keras`
(written when training finishes), `backup/` (BackupAndRestore: an interrupted
run resumes where it stopped when `train` is run again with the same
settings), `logs/` (TensorBoard) and `history.csv`; `evaluate` adds
`report/` (report.json, report.md, frontier.png) and `export` adds `bundle/`.
Each subcommand is also a Python function here (`train`, `evaluate`,
`export`, `demo`) taking the same settings.

Exit status (`keras-smart --help` shows this list):
  0    done; also --help, --helpfull and `keras-smart help`.
  2    a user error, in one line `keras-smart: error: ...` on stderr: a bad
       flag or setting, an unknown or missing subcommand, an unusable
       --output_dir, a missing run or data set, a run already there.
  1    an unexpected failure: a file-system error during the work (one
       line), or a bug (its traceback).
  130  interrupted (Ctrl-C), in one line; `train` resumes from its last
       finished epoch when the same command is run again.
  Set KERAS_SMART_DEBUG=1 to see the traceback of every error instead.

A failed start leaves nothing behind: `train` checks the settings and the
directory, loads the data and builds the model before it writes into the run
directory, and removes what it wrote if training fails (or is interrupted)
before its first epoch has ended; it never removes a directory or run it did
not create. The corrected command is then accepted.
"""

import dataclasses
import errno
import json
import logging as std_logging
import os
import pathlib
import shutil
import sys
import time

from absl import app
from absl import flags
from absl import logging

from keras_smart import _compat
from keras_smart import backbones
from keras_smart import callbacks as callbacks_lib
from keras_smart import config as config_lib
from keras_smart.convert import convert
from keras_smart import data as data_lib
from keras_smart import export as export_lib

keras = _compat.keras

# What `keras-smart --help` says of each subcommand.
COMMAND_HELP = {
    "train": "convert a backbone and train it once-for-all into --output_dir (run again to resume)",
    "evaluate": "write the trade-off report of a trained --run_dir (clean and attacked accuracy per λ)",
    "export": "write the Android bundle of a trained --run_dir (a LiteRT file per trade-off)",
    "demo": "convert, train, evaluate and export SMART on the embedded digits, in minutes",
}
COMMANDS = tuple(COMMAND_HELP)
MASKED_METHODS = ("smart", "floats")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What `train` needs to build, train and resume a run; saved as the run's config.json."""

    dataset: str = "digits"
    data_dir: str = None
    backbone: str = "digits_cnn"
    method: str = "smart"
    tradeoff_mode: str = "blend"  # smart only; None: the layer default (switch)
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    eps: float = 0.3
    attack_steps: int = 7
    step_size: float = None  # None: 2.5 * eps / steps (fixed schedule), 2 * eps (cosine)
    attack_schedule: str = "fixed"  # the training attack's step rule: fixed, cosine or apgd
    loss: str = "oat"  # oat, trades or ce_tradeoff
    recalibrate: bool = True  # batch-norm statistics recomputed per path at the end of fit
    norm: str = "linf"
    eps_warmup: int = 3
    lambdas: tuple = None  # None: (0, 1) for SMART's switch mode (two paths), OAT's set otherwise
    clean_share: float = None  # None: 0.5 with lambdas (0, 1), OAT's 1/6 otherwise
    sampling: str = "element"
    mask_score: str = "snip"
    mask_allocation: str = "global"  # per-path densities judged by AutoAttack (BENCHMARKS.md)
    density: tuple = (0.1, 0.35)  # (clean, adversarial): BENCHMARKS.md, per-path densities
    min_density: float = None  # with "global" allocation: every kernel keeps at least this share per path
    mask_warmup: int = 1
    augment: bool = False
    max_examples: int = 0  # 0: the whole split
    seed: int = 0

    def __post_init__(self):
        config_lib.coerce_enum(config_lib.Method, self.method, "method")
        if self.backbone not in backbones.BACKBONES:
            raise ValueError(f"Unknown backbone {self.backbone!r}. Choose from {sorted(backbones.BACKBONES)}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={getattr(self, name)!r}")
        two_paths = self.method == "smart" and self.tradeoff_mode in (None, "switch")
        if self.lambdas is None:
            object.__setattr__(self, "lambdas", (0.0, 1.0) if two_paths else config_lib.OAT_LAMBDAS)
        if self.clean_share is None:
            object.__setattr__(self, "clean_share", 0.5 if tuple(self.lambdas) == (0.0, 1.0) else 1 / 6)
        object.__setattr__(self, "lambdas", tuple(float(l) for l in self.lambdas))
        object.__setattr__(self, "density", tuple(float(d) for d in self.density))
        # Validates eps (> 0, and below the [0, 1] input range for L-inf: AttackConfig's rule), steps, lambdas, ...
        # before `train` writes anything.
        self.adversarial_config()
        config_lib.MaskConfig(score=self.mask_score, density=self.density)
        if self.min_density is not None:
            config_lib.check_density(self.min_density, "min_density")
        if self.mask_allocation not in ("layer", "global"):
            raise ValueError(f'`mask_allocation` must be "layer" or "global". Received: {self.mask_allocation!r}')
        if self.mask_allocation == "global" and self.mask_score == "learned":
            raise ValueError('mask_score="learned" designs per-kernel masks: use mask_allocation="layer".')

    def attack(self):
        return config_lib.AttackConfig(
            eps=self.eps, steps=self.attack_steps, step_size=self.step_size, norm=self.norm,
            step_schedule=self.attack_schedule,
        )

    def adversarial_config(self):
        return config_lib.AdversarialConfig(
            attack=self.attack(),
            lambdas=self.lambdas,
            sampling=self.sampling,
            clean_share=self.clean_share,
            seed=self.seed,
            loss=self.loss,
        )

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text):
        values = json.loads(text)
        for key in ("lambdas", "density"):
            values[key] = tuple(values[key])
        return cls(**values)


class RunExistsError(FileExistsError):
    """The output directory holds a finished run, or an unfinished one with other settings."""


class OutputDirError(OSError):
    """A run (or report, bundle) directory cannot be used: it is a file, lies under one, or cannot be written."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


# Errors a command reports in one line (exit status 2) rather than as a traceback.
USER_ERRORS = (
    RunExistsError, OutputDirError, FileNotFoundError, NotADirectoryError, ValueError,
    data_lib.DataNotAvailableError, export_lib.ExportError,
)


def _check_output_dir(path):
    """Raises OutputDirError unless `path` is a directory this process may write in, or one it may create.

    Writes nothing. (As root, permission bits do not stop writes, and os.access says so.)
    """
    path = pathlib.Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputDirError(path, "is a file, not a directory")
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise OutputDirError(path, f"cannot write in it: {os.strerror(errno.EACCES)}")
        return
    if path.is_symlink():
        raise OutputDirError(path, "is a broken symbolic link")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputDirError(path, f"cannot create it: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(path, f"cannot create it in {parent}: {os.strerror(errno.EACCES)}")


def _read_settings(config_path):
    """The TrainSettings saved in a run's config.json; ValueError (naming the file) when it is not one."""
    try:
        return TrainSettings.from_json(pathlib.Path(config_path).read_text())
    except (ValueError, TypeError, KeyError) as e:  # bad JSON, unknown or missing keys, invalid values
        raise ValueError(f"{config_path} is not a valid keras-smart config: {e}") from None


def _check_run_dir(run_dir, settings, overwrite):
    """What `train` will do in `run_dir`: "new", "resume" or "overwrite"; raises RunExistsError. Writes nothing."""
    config_path = run_dir / "config.json"
    if not (run_dir.is_dir() and any(run_dir.iterdir())):
        return "new"
    is_run = config_path.exists() or (run_dir / "model.keras").exists()
    if not is_run:
        raise RunExistsError(
            f"{run_dir} is not empty and is not a keras-smart run (no config.json). Choose another --output_dir"
            + (" (--overwrite replaces only keras-smart runs)." if overwrite else ".")
        )
    if overwrite:
        return "overwrite"
    if (run_dir / "model.keras").exists():
        raise RunExistsError(
            f"{run_dir} holds a finished run (model.keras). Choose another --output_dir, or pass "
            "--overwrite to replace it."
        )
    try:
        previous = _read_settings(config_path)
    except ValueError as e:
        raise RunExistsError(f"{e}. Choose another --output_dir, or pass --overwrite to replace that run.") from None
    if previous != settings:
        changed = sorted(k for k, v in dataclasses.asdict(settings).items() if dataclasses.asdict(previous)[k] != v)
        raise RunExistsError(
            f"{run_dir} holds an unfinished run with other settings ({', '.join(changed)}). Run the same "
            "command to resume it, choose another --output_dir, or pass --overwrite."
        )
    return "resume"


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _prepare_run_dir(run_dir, settings, plan):
    """Makes `run_dir` ready for `plan` (from `_check_run_dir`) and writes config.json.

    Returns a function that removes what this call created (the directories it
    made, or else the entries it wrote into an empty or replaced directory), or
    None when resuming (an interrupted run's files are never removed).
    """
    if plan == "resume":
        return None
    created = None  # the outermost directory this call creates
    for path in (run_dir.absolute(), *run_dir.absolute().parents):
        if path.exists():
            break
        created = path

    def undo():
        if created is not None:
            _remove(created)
        elif run_dir.is_dir():
            for entry in run_dir.iterdir():  # the directory was empty or replaced: its entries are ours
                _remove(entry)

    try:
        if plan == "overwrite":
            for entry in run_dir.iterdir():  # the directory itself (its owner, permissions) stays
                _remove(entry)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(settings.to_json())
    except OSError as e:
        undo()
        raise OutputDirError(run_dir, f"cannot create or write it: {e.strerror or e}") from e
    return undo


class _EpochEnded(keras.callbacks.Callback):
    """Records that an epoch ended (placed after BackupAndRestore: its checkpoint is written)."""

    def __init__(self):
        super().__init__()
        self.ended = False

    def on_epoch_end(self, epoch, logs=None):
        self.ended = True


def _training_data(settings):
    return data_lib.load(
        settings.dataset,
        "train",
        batch_size=settings.batch_size,
        data_dir=settings.data_dir,
        augment=settings.augment or None,
        shuffle_buffer=10_000,
        max_examples=settings.max_examples or None,
        seed=settings.seed,
    )


def _build_model(settings):
    input_shape, class_names = data_lib.info(settings.dataset, settings.data_dir)
    base = backbones.build(settings.backbone, input_shape, len(class_names))
    options = {"tradeoff_mode": settings.tradeoff_mode} if settings.method == "smart" and settings.tradeoff_mode else {}
    model = convert(base, settings.method, **options)
    model.compile(
        keras.optimizers.Adam(settings.learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train(settings, output_dir, *, overwrite=False, extra_callbacks=(), verbose=1):
    """Converts a backbone and trains it once-for-all; resumes an interrupted run in `output_dir`.

    Args:
      settings: a `TrainSettings`.
      output_dir: the run directory.
      overwrite: replace a finished run (or another run) in `output_dir`.
      extra_callbacks: more Keras callbacks for `fit`.
      verbose: Keras' progress bar setting.

    Returns:
      The trained SmartModel (also saved as `output_dir/model.keras`).

    Nothing is written into `output_dir` before the settings, the directory,
    the data and the model have all been checked or built; if training then
    fails before its first epoch has ended, what this call wrote is removed
    (so a corrected command is not refused as "another run"). An interrupted
    run that had finished an epoch is kept, and resumes.

    Raises:
      RunExistsError: `output_dir` holds a finished run, or an unfinished
        run with other settings, and overwrite is False; or it is a non-empty
        directory that is not a keras-smart run (also with overwrite).
      OutputDirError: `output_dir` is a file, or cannot be created or written.
    """
    run_dir = pathlib.Path(output_dir)
    _check_output_dir(run_dir)
    plan = _check_run_dir(run_dir, settings, overwrite)
    if plan == "resume":
        logging.info("Resuming the interrupted run in %s", run_dir)
    keras.utils.set_random_seed(settings.seed)
    dataset = _training_data(settings)
    model = _build_model(settings)
    adversarial = settings.adversarial_config()
    fit_callbacks = [
        callbacks_lib.AdversarialCallback(
            attack=adversarial.attack,
            lambdas=adversarial.lambdas,
            sampling=adversarial.sampling,
            clean_share=adversarial.clean_share,
            eps_schedule=settings.eps_warmup or None,
            seed=settings.seed,
            loss=adversarial.loss,
            recalibrate=settings.recalibrate,
        )
    ]
    if settings.method in MASKED_METHODS:
        # FLOATS' one mask serves both paths: it takes the adversarial path's density.
        density = settings.density if settings.method == "smart" else settings.density[1:] * 2
        fit_callbacks.append(
            callbacks_lib.MaskUpdate(
                dataset.take(4), score=settings.mask_score, density=density, allocation=settings.mask_allocation,
                min_density=settings.min_density, warmup_epochs=settings.mask_warmup,
                seed=settings.seed,
            )
        )
    epoch_ended = _EpochEnded()
    fit_callbacks += [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        epoch_ended,
        keras.callbacks.TensorBoard(str(run_dir / "logs")),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=plan == "resume"),
        *extra_callbacks,
    ]
    undo = _prepare_run_dir(run_dir, settings, plan)  # the first write into run_dir
    try:
        model.fit(dataset, epochs=settings.epochs, callbacks=fit_callbacks, verbose=verbose, shuffle=False)
    except BaseException:  # also KeyboardInterrupt: a run with no finished epoch has nothing to resume
        if undo is not None and not epoch_ended.ended:
            undo()
        raise
    _save_atomically(model, run_dir / "model.keras")
    return model


def _save_atomically(model, path):
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    model.save(str(partial))
    os.replace(partial, path)


def _run_settings(run_dir):
    """A trained run's settings (read before its model is loaded, to check the request against them)."""
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "model.keras").exists():
        raise FileNotFoundError(
            f"{run_dir} has no model.keras: train first (keras-smart train --output_dir={run_dir}), or let an "
            "interrupted run finish by running the same train command again."
        )
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} has a model.keras but no config.json: it is not a keras-smart run.")
    return _read_settings(config_path)


def _load_run(run_dir):
    settings = _run_settings(run_dir)
    return keras.models.load_model(str(pathlib.Path(run_dir) / "model.keras")), settings


def _test_arrays(settings, max_examples):
    """The test split as arrays (evaluation and the export check need them in memory)."""
    import numpy as np  # pylint: disable=g-import-not-at-top

    ds = data_lib.load(settings.dataset, "test", batch_size=1024, data_dir=settings.data_dir,
                       max_examples=max_examples or None)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def evaluate(run_dir, *, tradeoffs=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), attacks=("fgsm", "pgd20", "autoattack"),
             eps=None, max_examples=1000, batch_size=256, seed=0, attack_options=None, progress=True):
    """The trade-off report of a trained run, written to `run_dir/report/`.

    `attack_options` overrides `evaluation.DEFAULT_ATTACK_OPTIONS` (AutoAttack's
    standard settings), e.g. {"square": {"queries": 1000}}.

    Returns:
      The `TradeoffReport`; report.json, report.md and frontier.png are written.
    """
    from keras_smart import evaluation  # pylint: disable=g-import-not-at-top

    settings = _run_settings(run_dir)
    eps = settings.eps if eps is None else eps
    config_lib.AttackConfig(eps=eps, norm=settings.norm)  # eps checked for the run's inputs before any work
    _check_output_dir(pathlib.Path(run_dir) / "report")
    model, settings = _load_run(run_dir)
    x, y = _test_arrays(settings, max_examples)
    report = evaluation.evaluate_tradeoff(
        model, (x, y), lambdas=tuple(tradeoffs), attacks=tuple(attacks), eps=eps,
        norm=settings.norm, batch_size=batch_size, seed=seed, attack_options=attack_options, progress=progress,
    )
    report_dir = pathlib.Path(run_dir) / "report"
    report_dir.mkdir(exist_ok=True)
    (report_dir / "report.json").write_text(report.to_json())
    (report_dir / "report.md").write_text(report.to_markdown())
    report.plot(str(report_dir / "frontier.png"))
    return report


def export(run_dir, *, tradeoffs=(0.0, 1.0), quantize=None, runtime_tradeoff=False, overwrite=True):
    """The Android bundle of a trained run, written to `run_dir/bundle/`.

    Uses `run_dir/report/report.json` for the measured accuracies when
    `evaluate` has run. Returns what `keras_smart.export.bundle` returns.
    """
    _run_settings(run_dir)
    _check_output_dir(pathlib.Path(run_dir) / "bundle")
    model, settings = _load_run(run_dir)
    report_path = pathlib.Path(run_dir) / "report" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    _, labels = data_lib.info(settings.dataset, settings.data_dir)
    test_images = _test_arrays(settings, 256)[0]  # each file is checked against Keras on real test images
    return export_lib.bundle(
        model, str(pathlib.Path(run_dir) / "bundle"), tradeoffs=tuple(tradeoffs), labels=labels, report=report,
        quantize=quantize, representative_data=test_images if quantize == "int8" else None,
        check_data=test_images, runtime_tradeoff=runtime_tradeoff, overwrite=overwrite,
    )


# The CLI's defaults: SMART's blend mode with OAT's lambdas, snip masks allocated globally at
# densities (0.1, 0.35) (BENCHMARKS.md: per-path densities, judged by AutoAttack).
DEMO_SETTINGS = TrainSettings()
DEMO_TRADEOFFS = (0.0, 1.0)
# AutoAttack shrunk to fit the demo's minutes (the report states it): APGD-CE and APGD-T at 50
# steps, 3 target classes, Square at 1,000 queries. `keras-smart evaluate` runs the standard suite.
DEMO_ATTACK_OPTIONS = {
    "apgd-ce": {"steps": 50},
    "apgd-dlr": {"steps": 50, "target_classes": 3},
    "square": {"queries": 1000},
}


def demo(output_dir="keras_smart_demo", *, epochs=None, max_examples=0, eval_examples=500,
         attacks=("fgsm", "pgd20", "autoattack"), quantize="int8", verbose=1):
    """The main job on the embedded digits: convert, train SMART, evaluate the frontier, export the bundle.

    Replaces an earlier run in `output_dir`, but refuses a non-empty directory
    that is not a keras-smart run. Returns (report, bundle result).
    """
    start = time.perf_counter()
    settings = dataclasses.replace(DEMO_SETTINGS, epochs=epochs or DEMO_SETTINGS.epochs, max_examples=max_examples)
    run_dir = pathlib.Path(output_dir)
    _check_output_dir(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / "config.json").exists():
        raise RunExistsError(
            f"{run_dir} is not empty and not a keras-smart run: the demo replaces its output directory. "
            "Choose another --output_dir."
        )
    print(f"keras-smart demo: SMART on the embedded MNIST digits ({_compat.FLAVOUR}); run directory {run_dir}")
    train(settings, run_dir, overwrite=True, verbose=verbose)
    trained = time.perf_counter()
    report = evaluate(run_dir, tradeoffs=DEMO_TRADEOFFS, attacks=attacks, max_examples=eval_examples,
                      attack_options=DEMO_ATTACK_OPTIONS, progress=bool(verbose))
    evaluated = time.perf_counter()
    bundle = export(run_dir, tradeoffs=DEMO_TRADEOFFS, quantize=quantize)
    done = time.perf_counter()
    print()
    print(report.to_markdown())
    print(f"\ntrained in {trained - start:.0f}s, evaluated in {evaluated - trained:.0f}s, "
          f"exported in {done - evaluated:.0f}s; total {done - start:.0f}s")
    print(f"model:   {run_dir / 'model.keras'}")
    print(f"report:  {run_dir / 'report' / 'report.md'} (+ report.json, frontier.png)")
    print(_bundle_summary(bundle, run_dir / "bundle"))
    print(f"logs:    tensorboard --logdir {run_dir / 'logs'}")
    return report, bundle


def _bundle_summary(metadata, bundle_dir):
    """One line per exported file: name, trade-off, quantization, size, and its check against Keras."""
    lines = [f"bundle:  {bundle_dir} (labels.txt, smart.json)"]
    for entry in metadata["files"]:
        lam = "every λ (input 'tradeoff')" if entry["tradeoff"] is None else f"λ = {entry['tradeoff']:g}"
        check = entry["check"]
        agreement = f"top-1 agreement {100 * check['top1_agreement']:.1f}% on {check['samples']} test images"
        lines.append(f"  {entry['file']}: {lam}, {entry['quantize'] or 'float32'}, "
                     f"{entry['size_bytes'] / 1e3:.0f} kB, {agreement}")
    return "\n".join(lines)


# --- flags ----------------------------------------------------------------------------------------

_DEFAULTS = TrainSettings()
flags.DEFINE_string("dataset", _DEFAULTS.dataset, f"'digits' or one of {data_lib.TFDS_NAMES} (train).")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory (train).")
flags.DEFINE_enum("backbone", _DEFAULTS.backbone, sorted(backbones.BACKBONES), "Backbone (train).")
flags.DEFINE_enum("method", _DEFAULTS.method, [m.value for m in config_lib.Method], "Conversion method (train).")
flags.DEFINE_string("tradeoff_mode", _DEFAULTS.tradeoff_mode, "SMART's trade-off mode: switch, blend or noise (train).")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Training epochs (train, demo).")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Batch size (train).")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Adam learning rate (train).")
flags.DEFINE_float("eps", _DEFAULTS.eps, "Attack budget (train; evaluate defaults to the run's).")
flags.DEFINE_integer("attack_steps", _DEFAULTS.attack_steps, "PGD steps of the training attack (train).")
flags.DEFINE_float("step_size", None, "PGD step size; default 2.5 * eps / steps, 2 * eps for cosine (train).")
flags.DEFINE_enum("attack_schedule", _DEFAULTS.attack_schedule, [s.value for s in config_lib.StepSchedule],
                  "The training attack's step rule: fixed, cosine (from 2 * eps) or apgd (train).")
flags.DEFINE_enum("loss", _DEFAULTS.loss, [l.value for l in config_lib.AdversarialLoss],
                  "Once-for-all objective: oat, trades or ce_tradeoff (train).")
flags.DEFINE_bool("recalibrate", _DEFAULTS.recalibrate,
                  "Recompute each path's batch-norm statistics at the end of training (train).")
flags.DEFINE_enum("norm", _DEFAULTS.norm, ["linf", "l2"], "Threat model norm (train).")
flags.DEFINE_integer("eps_warmup", _DEFAULTS.eps_warmup, "Epochs of linear eps warm-up, 0 for none (train).")
flags.DEFINE_list("lambdas", None, "Training trade-offs, must include 0; default 0,1 for SMART's switch mode, "
                  "OAT's 0,.1,.2,.3,.4,1 otherwise (train).")
flags.DEFINE_float("clean_share", None, "Share of each batch trained at lam = 0; default 0.5 with lambdas 0,1, "
                   "1/6 otherwise (train).")
flags.DEFINE_enum("sampling", _DEFAULTS.sampling, ["element", "batch"], "lam sampling (train).")
flags.DEFINE_enum("mask_score", _DEFAULTS.mask_score, [s.value for s in config_lib.MaskScore], "Mask score (train).")
flags.DEFINE_list("density", [str(d) for d in _DEFAULTS.density], "Mask density: d or d_clean,d_adv (train).")
flags.DEFINE_float("min_density", 0.0, "With --mask_allocation=global, each kernel keeps at least this share "
                   "per path; 0 for no floor (train).")
flags.DEFINE_enum("mask_allocation", _DEFAULTS.mask_allocation, ["layer", "global"],
                  "Mask density per kernel (layer) or over all kernels together (global) (train).")
flags.DEFINE_integer("mask_warmup", _DEFAULTS.mask_warmup, "Dense epochs before masks are designed (train).")
flags.DEFINE_bool("augment", False, "Pad-crop and flip augmentation (train; CIFAR-like data).")
flags.DEFINE_integer("max_examples", 0, "Use only this many training examples; 0 for all (train, demo).")
flags.DEFINE_integer("seed", 0, "Seed (train, evaluate).")
flags.DEFINE_string("output_dir", None, "Run directory (train; demo default keras_smart_demo).")
flags.DEFINE_bool("overwrite", False, "Replace an existing run in --output_dir (train).")
flags.DEFINE_string("run_dir", None, "A trained run directory (evaluate, export).")
flags.DEFINE_list("tradeoffs", None, "Trade-offs to evaluate or export (evaluate: 0,.2,...,1; export: 0,1).")
flags.DEFINE_list("attacks", ["fgsm", "pgd20", "autoattack"], "Attacks (evaluate, demo).")
flags.DEFINE_integer("eval_examples", 1000, "Test examples to evaluate on (evaluate; demo uses 500).")
flags.DEFINE_enum("quantize", None, ["dynamic", "float16", "int8"], "Quantization of the exported files (export).")
flags.DEFINE_bool("runtime_tradeoff", False, "Export one file with lam as a second input (export).")
FLAGS = flags.FLAGS


def _floats(name):
    """A list flag's numbers (None when not given); ValueError naming the flag otherwise."""
    values = getattr(FLAGS, name)
    if values is None:
        return None
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise ValueError(f"--{name} takes numbers separated by commas. Received: --{name}={','.join(values)}") from None


def _settings_from_flags():
    density = list(_floats("density"))
    lambdas = _floats("lambdas")
    return TrainSettings(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, backbone=FLAGS.backbone, method=FLAGS.method,
        tradeoff_mode=FLAGS.tradeoff_mode, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, eps=FLAGS.eps, attack_steps=FLAGS.attack_steps,
        step_size=FLAGS.step_size, attack_schedule=FLAGS.attack_schedule, loss=FLAGS.loss,
        recalibrate=FLAGS.recalibrate, norm=FLAGS.norm, eps_warmup=FLAGS.eps_warmup,
        lambdas=lambdas,
        clean_share=FLAGS.clean_share, sampling=FLAGS.sampling, min_density=FLAGS.min_density or None,
        mask_score=FLAGS.mask_score, mask_allocation=FLAGS.mask_allocation,
        density=tuple(density * 2 if len(density) == 1 else density),
        mask_warmup=FLAGS.mask_warmup, augment=FLAGS.augment, max_examples=FLAGS.max_examples, seed=FLAGS.seed,
    )


def _require(flag):
    if getattr(FLAGS, flag) is None:
        raise ValueError(f"--{flag} is required.")
    return getattr(FLAGS, flag)


def _usage(full=False):
    """The --help text: the subcommands, examples, exit status, then this module's flags (every flag if `full`)."""
    doc = __doc__.splitlines()
    examples = [line for line in doc if line.startswith("  keras-smart ")]
    first = next(i for i, line in enumerate(doc) if line.startswith("Exit status")) + 1
    errors = doc[first:doc.index("", first)]
    lines = [
        f"usage: keras-smart {{{','.join(COMMANDS)}}} [--flag=value ...]",
        "",
        "commands:",
        *(f"  {name:<9} {text}" for name, text in COMMAND_HELP.items()),
        f"  {'help':<9} show this help",
        "",
        "examples:",
        *examples,
        "",
        "exit status:",
        *errors,
        "",
    ]
    if full:
        lines += ["flags (all of them):", FLAGS.get_help()]
    else:
        module = FLAGS.find_module_defining_flag("output_dir")
        lines += [
            "flags (each says which commands use it; --helpfull lists every flag):",
            FLAGS.module_help(module).strip("\n").split("\n", 1)[-1],  # without the module's name
        ]
    return "\n".join(lines) + "\n"


def _debug():
    """KERAS_SMART_DEBUG=1: every error shows its traceback."""
    return os.environ.get("KERAS_SMART_DEBUG", "") not in ("", "0")


def _say(message, prefix="keras-smart: error: "):
    """`message` as one line on stderr."""
    text = " ".join(line.strip() for line in str(message).strip().splitlines() if line.strip())
    print(f"{prefix}{text}", file=sys.stderr, flush=True)


def _interrupted(command):
    if command != "train" or not FLAGS.output_dir:
        return "interrupted"
    run_dir = pathlib.Path(FLAGS.output_dir)
    if (run_dir / "model.keras").exists():
        return f"interrupted; the run in {run_dir} had finished (model.keras)"
    if (run_dir / "config.json").exists():
        return (f"interrupted; run the same command again to resume from the last finished epoch's checkpoint "
                f"({run_dir / 'backup'})")
    return "interrupted before the first epoch ended; nothing was kept (run the same command again to start over)"


def _command(command):
    if command == "train":
        try:
            settings = _settings_from_flags()
        except TypeError as e:
            raise ValueError(str(e)) from None
        train(settings, _require("output_dir"), overwrite=FLAGS.overwrite)
    elif command == "evaluate":
        report = evaluate(
            _require("run_dir"), tradeoffs=_floats("tradeoffs") or (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
            attacks=FLAGS.attacks, eps=FLAGS.eps if FLAGS["eps"].present else None, max_examples=FLAGS.eval_examples,
            seed=FLAGS.seed,
        )
        print(report.to_markdown())
    elif command == "export":
        run_dir = _require("run_dir")
        metadata = export(
            run_dir, tradeoffs=_floats("tradeoffs") or (0.0, 1.0), quantize=FLAGS.quantize,
            runtime_tradeoff=FLAGS.runtime_tradeoff,
        )
        print(_bundle_summary(metadata, pathlib.Path(run_dir) / "bundle"))
    else:
        demo(FLAGS.output_dir or "keras_smart_demo", epochs=FLAGS.epochs if FLAGS["epochs"].present else None,
             max_examples=FLAGS.max_examples, eval_examples=FLAGS.eval_examples if FLAGS["eval_examples"].present
             else 500, attacks=FLAGS.attacks)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(_usage())
        return 2
    command = argv[1]
    if command == "help":
        sys.stdout.write(_usage())
        return 0
    if command not in COMMANDS:
        _say(f"unknown command {command!r}: choose one of {', '.join(COMMANDS)} (keras-smart --help)")
        return 2
    if len(argv) > 2:
        _say(f"unexpected arguments after {command!r}: {' '.join(argv[2:])} (flags take the form --name=value)")
        return 2
    # TensorFlow logs each SavedModel it writes on the way to a LiteRT file at INFO; keep the output readable.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        _command(command)
    except KeyboardInterrupt:
        if _debug():
            raise
        _say(_interrupted(command), prefix="keras-smart: ")
        return 130
    except OutputDirError as e:
        if _debug():
            raise
        output_dir = FLAGS.output_dir or ("keras_smart_demo" if command == "demo" else None)
        named = command in ("train", "demo") and output_dir and pathlib.Path(output_dir) == pathlib.Path(e.path)
        _say(f"--output_dir={e.path}: {e.reason}" if named else e)
        return 2
    except USER_ERRORS as e:
        if _debug():
            raise
        _say(e)
        return 2
    except OSError as e:  # the file system failed during the work (disk full, ...): no bug, no traceback
        if _debug():
            raise
        _say(e)
        return 1
    return 0


def _parse_flags(argv):
    """absl's flag parsing, with errors in one line (exit status 2)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        if _debug():
            raise
        _say(f"{e} (keras-smart --help lists the commands, --helpfull every flag)")
        sys.exit(2)


_HELP_ARGS = ("--help", "-h", "-?", "--helpshort")


def run(argv=None):
    """The console script's entry point."""
    argv = list(sys.argv if argv is None else argv)
    args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if "--helpfull" in args or any(a in _HELP_ARGS for a in args):  # absl's own help exits 1, without commands
        sys.stdout.write(_usage(full="--helpfull" in args))
        sys.exit(0)
    try:
        app.run(main, argv, flags_parser=_parse_flags)
    except KeyboardInterrupt:  # before main: flag parsing, absl's set-up
        if _debug():
            raise
        _say("interrupted", prefix="keras-smart: ")
        sys.exit(130)


if __name__ == "__main__":
    run()
