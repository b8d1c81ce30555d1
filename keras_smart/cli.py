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
"""

import dataclasses
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

COMMANDS = ("train", "evaluate", "export", "demo")
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
        self.adversarial_config()  # validates eps, steps, lambdas, ...
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


# Errors a command reports in one line (exit status 2) rather than as a traceback.
USER_ERRORS = (RunExistsError, FileNotFoundError, ValueError, data_lib.DataNotAvailableError, export_lib.ExportError)


def _prepare_run_dir(run_dir, settings, overwrite):
    """Creates the run directory; returns True when it resumes an interrupted run there."""
    config_path = run_dir / "config.json"
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite:
            shutil.rmtree(run_dir)
        elif (run_dir / "model.keras").exists():
            raise RunExistsError(
                f"{run_dir} holds a finished run (model.keras). Choose another --output_dir, or pass "
                "--overwrite to replace it."
            )
        elif config_path.exists():
            previous = TrainSettings.from_json(config_path.read_text())
            if previous != settings:
                changed = sorted(
                    k for k, v in dataclasses.asdict(settings).items() if dataclasses.asdict(previous)[k] != v
                )
                raise RunExistsError(
                    f"{run_dir} holds an unfinished run with other settings ({', '.join(changed)}). Run the same "
                    "command to resume it, choose another --output_dir, or pass --overwrite."
                )
            return True
        else:
            raise RunExistsError(f"{run_dir} is not empty and is not a keras-smart run. Choose another --output_dir.")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(settings.to_json())
    return False


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

    Raises:
      RunExistsError: `output_dir` holds a finished run, or an unfinished
        run with other settings, and overwrite is False.
    """
    run_dir = pathlib.Path(output_dir)
    resuming = _prepare_run_dir(run_dir, settings, overwrite)
    if resuming:
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
    fit_callbacks += [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.TensorBoard(str(run_dir / "logs")),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resuming),
        *extra_callbacks,
    ]
    model.fit(dataset, epochs=settings.epochs, callbacks=fit_callbacks, verbose=verbose, shuffle=False)
    _save_atomically(model, run_dir / "model.keras")
    return model


def _save_atomically(model, path):
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    model.save(str(partial))
    os.replace(partial, path)


def _load_run(run_dir):
    run_dir = pathlib.Path(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.exists():
        raise FileNotFoundError(
            f"{run_dir} has no model.keras: train first (keras-smart train --output_dir={run_dir}), or let an "
            "interrupted run finish by running the same train command again."
        )
    settings = TrainSettings.from_json((run_dir / "config.json").read_text())
    return keras.models.load_model(str(model_path)), settings


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

    model, settings = _load_run(run_dir)
    x, y = _test_arrays(settings, max_examples)
    report = evaluation.evaluate_tradeoff(
        model, (x, y), lambdas=tuple(tradeoffs), attacks=tuple(attacks), eps=eps or settings.eps,
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


def _settings_from_flags():
    density = [float(d) for d in FLAGS.density]
    return TrainSettings(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, backbone=FLAGS.backbone, method=FLAGS.method,
        tradeoff_mode=FLAGS.tradeoff_mode, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, eps=FLAGS.eps, attack_steps=FLAGS.attack_steps,
        step_size=FLAGS.step_size, attack_schedule=FLAGS.attack_schedule, loss=FLAGS.loss,
        recalibrate=FLAGS.recalibrate, norm=FLAGS.norm, eps_warmup=FLAGS.eps_warmup,
        lambdas=None if FLAGS.lambdas is None else tuple(float(l) for l in FLAGS.lambdas),
        clean_share=FLAGS.clean_share, sampling=FLAGS.sampling, min_density=FLAGS.min_density or None,
        mask_score=FLAGS.mask_score, mask_allocation=FLAGS.mask_allocation,
        density=tuple(density * 2 if len(density) == 1 else density),
        mask_warmup=FLAGS.mask_warmup, augment=FLAGS.augment, max_examples=FLAGS.max_examples, seed=FLAGS.seed,
    )


def _require(flag):
    if getattr(FLAGS, flag) is None:
        raise app.UsageError(f"--{flag} is required.")
    return getattr(FLAGS, flag)


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"Usage: keras-smart {{{'|'.join(COMMANDS)}}} [--flags]; got {argv[1:]}")
    command = argv[1]
    # TensorFlow logs each SavedModel it writes on the way to a LiteRT file at INFO; keep the output readable.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        if command == "train":
            train(_settings_from_flags(), _require("output_dir"), overwrite=FLAGS.overwrite)
        elif command == "evaluate":
            tradeoffs = FLAGS.tradeoffs or (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
            report = evaluate(
                _require("run_dir"), tradeoffs=[float(t) for t in tradeoffs], attacks=FLAGS.attacks,
                eps=FLAGS.eps if FLAGS["eps"].present else None, max_examples=FLAGS.eval_examples, seed=FLAGS.seed,
            )
            print(report.to_markdown())
        elif command == "export":
            run_dir = _require("run_dir")
            metadata = export(
                run_dir, tradeoffs=[float(t) for t in (FLAGS.tradeoffs or (0.0, 1.0))],
                quantize=FLAGS.quantize, runtime_tradeoff=FLAGS.runtime_tradeoff,
            )
            print(_bundle_summary(metadata, pathlib.Path(run_dir) / "bundle"))
        else:
            demo(FLAGS.output_dir or "keras_smart_demo", epochs=FLAGS.epochs if FLAGS["epochs"].present else None,
                 max_examples=FLAGS.max_examples, eval_examples=FLAGS.eval_examples if FLAGS["eval_examples"].present
                 else 500, attacks=FLAGS.attacks)
    except USER_ERRORS as e:
        print(f"keras-smart {command}: {e}", file=sys.stderr)
        return 2
    return 0


def run():
    """The console script's entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
