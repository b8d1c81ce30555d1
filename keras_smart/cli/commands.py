"""The `keras-smart` command line: train | evaluate | export | demo.

  keras-smart train --dataset=digits --backbone=digits_cnn --method=smart --epochs=10 --output_dir=runs/smart
  keras-smart evaluate --run_dir=runs/smart --attacks=fgsm,pgd20,autoattack
  keras-smart export --run_dir=runs/smart --quantize=int8
  keras-smart train --exits=pool1,pool2 --output_dir=runs/exits   # then evaluate --budget=0.6, export: staged
  keras-smart demo

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

Each command is a function of `keras_smart.cli.runs` (and `digits_demo`);
this module turns flags into their arguments and their errors into one line.
"""

import logging as std_logging
import os
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging

import keras_smart
from keras_smart import backbones
from keras_smart import config as config_lib
from keras_smart import data as data_lib
from keras_smart.cli import digits_demo
from keras_smart.cli import run_dir as run_dir_lib
from keras_smart.cli import runs
from keras_smart.cli import settings as settings_lib

# What `keras-smart --help` says of each subcommand.
COMMAND_HELP = {
    "train": "convert a backbone and train it once-for-all into --output_dir (run again to resume)",
    "evaluate": "write the trade-off report of a trained --run_dir (clean and attacked accuracy per λ)",
    "export": "write the Android bundle of a trained --run_dir (a LiteRT file per trade-off; per stage with exits)",
    "demo": "convert, train, evaluate and export SMART on the embedded digits, in minutes",
}
COMMANDS = tuple(COMMAND_HELP)

# Errors a command reports in one line (exit status 2) rather than as a traceback.
USER_ERRORS = (
    run_dir_lib.RunExistsError, run_dir_lib.OutputDirError, FileNotFoundError, NotADirectoryError, ValueError,
    data_lib.DataNotAvailableError, keras_smart.export.ExportError,
)

# --- flags ----------------------------------------------------------------------------------------

_DEFAULTS = settings_lib.TrainSettings()
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
flags.DEFINE_list(
    "tradeoffs", None,
    "Trade-offs λ in [0, 1]. train: those training draws from, 0 included (default 0,1 for SMART's switch mode, "
    "OAT's 0,.1,.2,.3,.4,1 otherwise); evaluate: those evaluated (default 0,.2,.4,.6,.8,1); export: those "
    "baked, a file each (default 0,1).",
)
flags.DEFINE_list("lambdas", None, "Deprecated: the old name of --tradeoffs.")
flags.DEFINE_float("clean_share", None, "Share of each batch trained at λ = 0; default 0.5 with trade-offs 0,1, "
                   "1/6 otherwise (train).")
flags.DEFINE_enum("sampling", _DEFAULTS.sampling, ["element", "batch"], "λ sampling (train).")
flags.DEFINE_enum("mask_score", _DEFAULTS.mask_score, [s.value for s in config_lib.MaskScore], "Mask score (train).")
flags.DEFINE_list("density", [str(d) for d in _DEFAULTS.density], "Mask density: d or d_clean,d_adv (train).")
flags.DEFINE_float("min_density", 0.0, "With --mask_allocation=global, each kernel keeps at least this share "
                   "per path; 0 for no floor (train).")
flags.DEFINE_enum("mask_allocation", _DEFAULTS.mask_allocation, list(settings_lib.MASK_ALLOCATIONS),
                  "Mask density per kernel (layer) or over all kernels together (global) (train).")
flags.DEFINE_integer("mask_warmup", _DEFAULTS.mask_warmup, "Dense epochs before masks are designed (train).")
flags.DEFINE_list("exits", None, "Backbone layer names to attach early exits after (RDI-Nets), in graph order, "
                  "e.g. pool1,pool2 (train).")
flags.DEFINE_bool("augment", False, "Pad-crop and flip augmentation (train; CIFAR-like data).")
flags.DEFINE_integer("max_examples", 0, "Use only this many training examples; 0 for all (train, demo).")
flags.DEFINE_integer("seed", 0, "Seed (train, evaluate).")
flags.DEFINE_string("output_dir", None, f"Run directory (train; demo default {digits_demo.DEMO_OUTPUT_DIR}).")
flags.DEFINE_bool("overwrite", False, "Replace an existing run in --output_dir (train).")
flags.DEFINE_string("run_dir", None, "A trained run directory (evaluate, export).")
flags.DEFINE_list("attacks", list(runs.DEFAULT_ATTACKS), "Attacks (evaluate, demo).")
flags.DEFINE_integer("eval_examples", 1000,
                     f"Test examples to evaluate on (evaluate; demo uses {digits_demo.DEMO_EVAL_EXAMPLES}).")
flags.DEFINE_float("budget", None, "A run with exits: calibrate its exit policy to this expected share of the full "
                   f"model's MACs, on the test split's last {runs.CALIBRATION_EXAMPLES} examples, which evaluation "
                   "leaves out; writes policy.json (evaluate).")
flags.DEFINE_enum("quantize", None, [q for q in keras_smart.export.QUANTIZE_CHOICES if q],
                  "Quantization of the exported files (export).")
flags.DEFINE_bool("runtime_tradeoff", False, "Export one file with λ as a second input (export).")
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


def _tradeoffs():
    """--tradeoffs, or --lambdas (its old name, with a one-line warning); None when neither is given."""
    tradeoffs, lambdas = _floats("tradeoffs"), _floats("lambdas")
    if lambdas is None:
        return tradeoffs
    if tradeoffs is not None:
        raise ValueError("--lambdas is the old name of --tradeoffs: pass only --tradeoffs.")
    _say("--lambdas is deprecated and will be removed in the next release: use --tradeoffs.",
         prefix="keras-smart: warning: ")
    return lambdas


def _settings_from_flags():
    density = list(_floats("density"))
    return settings_lib.TrainSettings(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, backbone=FLAGS.backbone, method=FLAGS.method,
        tradeoff_mode=FLAGS.tradeoff_mode, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, eps=FLAGS.eps, attack_steps=FLAGS.attack_steps,
        step_size=FLAGS.step_size, attack_schedule=FLAGS.attack_schedule, loss=FLAGS.loss,
        recalibrate=FLAGS.recalibrate, norm=FLAGS.norm, eps_warmup=FLAGS.eps_warmup, tradeoffs=_tradeoffs(),
        clean_share=FLAGS.clean_share, sampling=FLAGS.sampling, min_density=FLAGS.min_density or None,
        mask_score=FLAGS.mask_score, mask_allocation=FLAGS.mask_allocation,
        density=tuple(density * 2 if len(density) == 1 else density),
        mask_warmup=FLAGS.mask_warmup, exits=tuple(FLAGS.exits) if FLAGS.exits else None, augment=FLAGS.augment,
        max_examples=FLAGS.max_examples, seed=FLAGS.seed,
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
    return run_dir_lib.interrupted_train_message(FLAGS.output_dir)


def _train():
    try:
        settings = _settings_from_flags()
    except TypeError as e:
        raise ValueError(str(e)) from None
    runs.train(settings, _require("output_dir"), overwrite=FLAGS.overwrite)


def _evaluate():
    report = runs.evaluate(
        _require("run_dir"), tradeoffs=_tradeoffs() or config_lib.EVALUATION_TRADEOFFS,
        attacks=FLAGS.attacks if FLAGS["attacks"].present else None,
        eps=FLAGS.eps if FLAGS["eps"].present else None, max_examples=FLAGS.eval_examples, seed=FLAGS.seed,
        budget=FLAGS.budget,
    )
    print(report.to_markdown())
    calibration = report.settings.get("exit_calibration")
    if calibration:
        first, end = calibration["examples"]
        print(f"exit policy: {pathlib.Path(FLAGS.run_dir) / runs.POLICY}, calibrated at λ = {calibration['tradeoff']:g} "
              f"for {calibration['budget']:g} of the full model's MACs on test examples {first}-{end - 1} "
              f"(evaluated on examples 0-{calibration['evaluated'][1] - 1})")


def _export():
    run_dir = _require("run_dir")
    metadata = runs.export(
        run_dir, tradeoffs=_tradeoffs() or runs.EXPORT_TRADEOFFS, quantize=FLAGS.quantize,
        runtime_tradeoff=FLAGS.runtime_tradeoff,
    )
    print(runs.describe_bundle(metadata, pathlib.Path(run_dir) / run_dir_lib.BUNDLE))


def _demo():
    digits_demo.demo(
        FLAGS.output_dir or digits_demo.DEMO_OUTPUT_DIR,
        epochs=FLAGS.epochs if FLAGS["epochs"].present else None,
        max_examples=FLAGS.max_examples,
        eval_examples=FLAGS.eval_examples if FLAGS["eval_examples"].present else digits_demo.DEMO_EVAL_EXAMPLES,
        attacks=FLAGS.attacks,
    )


_RUN = {"train": _train, "evaluate": _evaluate, "export": _export, "demo": _demo}


def _refused(command, argv):
    """The one-line answer (and exit status) to a command line that names no known command, or None."""
    if command not in COMMANDS:
        return f"unknown command {command!r}: choose one of {', '.join(COMMANDS)} (keras-smart --help)"
    if len(argv) > 2:
        return f"unexpected arguments after {command!r}: {' '.join(argv[2:])} (flags take the form --name=value)"
    return None


def _output_dir_error(command, error):
    """An OutputDirError in one line, naming --output_dir when that flag (or the demo's default) is the path."""
    output_dir = FLAGS.output_dir or (digits_demo.DEMO_OUTPUT_DIR if command == "demo" else None)
    named = command in ("train", "demo") and output_dir and pathlib.Path(output_dir) == pathlib.Path(error.path)
    return f"--output_dir={error.path}: {error.reason}" if named else error


def main(argv):
    """Runs the command `argv[1]` (flags already parsed); returns the exit status."""
    if len(argv) < 2:
        sys.stderr.write(_usage())
        return 2
    command = argv[1]
    if command == "help":
        sys.stdout.write(_usage())
        return 0
    refusal = _refused(command, argv)
    if refusal:
        _say(refusal)
        return 2
    # TensorFlow logs each SavedModel it writes on the way to a LiteRT file at INFO; keep the output readable.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        _RUN[command]()
    except (KeyboardInterrupt, OSError, *USER_ERRORS) as e:
        if _debug():
            raise
        return _answer_error(command, e)
    return 0


def _answer_error(command, error):
    """Says `error` in one line; returns the exit status."""
    if isinstance(error, KeyboardInterrupt):
        _say(_interrupted(command), prefix="keras-smart: ")
        return 130
    if isinstance(error, run_dir_lib.OutputDirError):
        _say(_output_dir_error(command, error))
        return 2
    _say(error)
    # An OSError that is no user error: the file system failed during the work (disk full, ...): no bug.
    return 2 if isinstance(error, USER_ERRORS) else 1


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
    """The console script's entry point: `keras-smart` with `argv` (default: sys.argv)."""
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
