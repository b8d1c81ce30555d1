"""SMART on CIFAR-10 with MobileNetV2, end to end: train once-for-all, evaluate the frontier, export for Android.

Run (CIFAR-10 must be prepared in tensorflow-datasets, see below):

  python examples/cifar10_mobilenet.py --data_dir=~/tensorflow_datasets --output_dir=cifar10_smart
  python examples/cifar10_mobilenet.py --epochs=1 --max_examples=2048 --eval_examples=256 --attacks=fgsm,pgd20

The recipe is `keras-smart train` / `evaluate` / `export` with CIFAR-10
settings: a `TrainSettings` (the `mobilenet_v2` backbone, untrained, logits
out; pad-crop and flip augmentation; in-graph PGD-7 at eps = 8/255 with a
linear eps warm-up; a dense warm-up, then SNIP masks per path and layer) run
by `keras_smart.cli.runs`: `train` (`keras_smart.convert(..., "smart")`, then
`fit` with `AdversarialCallback` and `MaskUpdate`), `evaluate`
(`keras_smart.evaluate_tradeoff` on the test split: report/report.md,
report.json, frontier.png) and `export` (`keras_smart.export.bundle`: one
int8 LiteRT file per trade-off, labels.txt, smart.json). The output directory
is a keras-smart run directory: `keras-smart evaluate --run_dir=...` reads it,
and an interrupted run resumes when the same command is run again.

Data: nothing is downloaded unless --download is given. Prepare CIFAR-10 once
on a machine with network, e.g.

  python -c "import tensorflow_datasets as tfds; tfds.builder('cifar10', data_dir='DIR').download_and_prepare()"

and pass --data_dir=DIR (or set TFDS_DATA_DIR). Otherwise
`keras_smart.data.load` raises `DataNotAvailableError`, whose message says how
to provide it; this script prints that message and exits with status 2.

Cost: the defaults (30 epochs of PGD-7 adversarial training on 50,000 images,
AutoAttack on 1,000 test images) are a GPU job; every setting shrinks from the
command line or as a keyword of `main`.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import keras_smart
from keras_smart import cli
from keras_smart.cli import run_dir
from keras_smart.cli import runs

DATASET = "cifar10"
BACKBONE = "mobilenet_v2"
EPS = 8 / 255


def train_settings(*, epochs=30, max_examples=None, batch_size=128, data_dir=None, attack_steps=7, eps_warmup=5,
                   mask_warmup=5, mask_score="snip", density=(0.35, 0.35), tradeoff_mode=None, learning_rate=1e-3,
                   seed=0):
    """The run's `TrainSettings`: SMART MobileNetV2 on CIFAR-10 at eps = 8/255 (`main` describes the arguments)."""
    return cli.TrainSettings(
        dataset=DATASET, data_dir=data_dir, backbone=BACKBONE, method="smart", tradeoff_mode=tradeoff_mode,
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, eps=EPS, attack_steps=attack_steps,
        eps_warmup=eps_warmup, mask_score=mask_score, mask_allocation="layer", density=tuple(density),
        mask_warmup=max(0, min(mask_warmup, epochs - 1)),  # the masks are always designed
        augment=True, max_examples=max_examples or 0, seed=seed,
    )


def main(
    *,
    epochs=30,
    max_examples=None,
    eval_examples=1000,
    attacks=("fgsm", "pgd20", "autoattack"),
    attack_options=None,
    batch_size=128,
    data_dir=None,
    download=False,
    output_dir="cifar10_smart",
    overwrite=False,
    quantize="int8",
    attack_steps=7,
    eps_warmup=5,
    mask_warmup=5,
    mask_score="snip",
    density=(0.35, 0.35),
    tradeoffs=(0.0, 1.0),
    tradeoff_mode=None,
    learning_rate=1e-3,
    run_eagerly=False,
    seed=0,
    verbose=1,
):
    """Trains SMART MobileNetV2 on CIFAR-10, evaluates the trade-off frontier, writes the Android bundle.

    Args:
      epochs: training epochs.
      max_examples: train on only the first this many training images (None: all 50,000).
      eval_examples: evaluate on the first this many test images (None: all 10,000).
      attacks: `evaluate_tradeoff`'s attack names ("fgsm", "pgd<K>", "apgd-ce", "apgd-dlr",
        "square", "autoattack").
      attack_options: overrides of `keras_smart.evaluation.DEFAULT_ATTACK_OPTIONS`,
        e.g. {"square": {"queries": 1000}}.
      batch_size: training and evaluation batch size.
      data_dir: where tensorflow-datasets keeps prepared data (None: TFDS_DATA_DIR
        or ~/tensorflow_datasets).
      download: let tensorflow-datasets download and prepare CIFAR-10 (needs network).
      output_dir: the run directory: config.json, model.keras, history.csv,
        logs/, report/ and bundle/ are written there. An interrupted run there
        resumes; a finished one is refused unless `overwrite`.
      overwrite: replace a finished run in `output_dir`.
      quantize: the bundle's quantization: None, "dynamic", "float16" or "int8"
        (int8 is calibrated on the first 256 test images and must agree with
        Keras on >= 98% of them, which a barely trained model may not).
      attack_steps: PGD steps of the training attack (eps = 8/255, step 2.5 * eps / steps).
      eps_warmup: epochs of linear eps warm-up (0: none).
      mask_warmup: dense epochs before the masks are designed (at most epochs - 1,
        so that the masks are always designed).
      mask_score: "snip", "magnitude", "random" or "learned" (see `design_masks`).
      density: (clean, adversarial) share of each kernel that each path keeps.
      tradeoffs: trade-offs to evaluate and to export. In SMART's default
        "switch" mode every trade-off > 0 selects the adversarial path, so
        (0, 1) covers the frontier (and is what training draws from); with
        tradeoff_mode="blend" list more.
      tradeoff_mode: SMART's `tradeoff_mode` (None: the layer default, "switch").
      learning_rate: Adam's learning rate.
      run_eagerly: train without tracing the train step: slower per step, but
        no graph to build, which for the adversarial step of MobileNetV2 takes
        minutes on a CPU; for smoke runs on a few batches.
      seed: seeds Keras, the shuffle, augmentation, trade-off draws and masks.
      verbose: Keras' progress-bar setting; 0 also silences the evaluation progress bar.

    Returns:
      A dict: "history" (fit's logs per epoch), "rows" (the report's rows),
      "report" (the `TradeoffReport`), "nonzero" (`count_nonzero` as a dict),
      "bundle" (the metadata written to smart.json), "files" (name -> path of
      what was written) and "seconds" (train / evaluate / export / total).

    Raises:
      keras_smart.data.DataNotAvailableError: CIFAR-10 is not prepared under
        `data_dir` and download=False (nothing is written).
      keras_smart.cli.RunExistsError: `output_dir` holds a finished run and
        overwrite=False, or is a non-empty directory that is not a keras-smart run.
      keras_smart.export.ExportError: a LiteRT file failed its check.
    """
    start = time.perf_counter()
    settings = train_settings(
        epochs=epochs, max_examples=max_examples, batch_size=batch_size, data_dir=data_dir,
        attack_steps=attack_steps, eps_warmup=eps_warmup, mask_warmup=mask_warmup, mask_score=mask_score,
        density=density, tradeoff_mode=tradeoff_mode, learning_rate=learning_rate, seed=seed,
    )
    smart = runs.train(settings, output_dir, overwrite=overwrite, download=download, run_eagerly=run_eagerly,
                       verbose=verbose)
    trained = time.perf_counter()
    report = runs.evaluate(
        output_dir, tradeoffs=tradeoffs, attacks=attacks, max_examples=eval_examples, batch_size=batch_size,
        seed=seed, attack_options=attack_options, progress=bool(verbose), download=download,
    )
    evaluated = time.perf_counter()
    metadata = runs.export(output_dir, tradeoffs=tradeoffs, quantize=quantize, download=download)
    done = time.perf_counter()
    seconds = {"train": trained - start, "evaluate": evaluated - trained, "export": done - evaluated,
               "total": done - start}
    counts = keras_smart.count_nonzero(smart)
    out = pathlib.Path(output_dir)
    if verbose:
        _print_summary(report, counts, metadata, seconds, out)
    return {
        "history": smart.history.history,
        "rows": [dict(row) for row in report.rows],
        "report": report,
        "nonzero": counts.as_dict(),
        "bundle": metadata,
        "files": {name: str(path) for name, path in _written(out).items()},
        "seconds": seconds,
    }


def _written(out):
    """What a finished run directory holds: name -> path."""
    report = out / run_dir.REPORT
    return {
        "config": out / run_dir.CONFIG,
        "model": out / run_dir.MODEL,
        "history": out / run_dir.HISTORY,
        "logs": out / run_dir.LOGS,
        "report_json": report / "report.json",
        "report_md": report / "report.md",
        "frontier": report / "frontier.png",
        "bundle": out / run_dir.BUNDLE,
    }


def _print_summary(report, counts, metadata, seconds, out):
    print()
    print(report.to_markdown())
    print(f"\nnon-zero kernel weights: clean {counts.clean / counts.total:.1%}, adversarial "
          f"{counts.adv / counts.total:.1%}, union {counts.union / counts.total:.1%} of {counts.total:,}")
    print(runs.describe_bundle(metadata, out / run_dir.BUNDLE))
    print(f"\ntrained in {seconds['train']:.0f}s, evaluated in {seconds['evaluate']:.0f}s, exported in "
          f"{seconds['export']:.0f}s; written to {out}")


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--max_examples", type=int, default=0, help="training images (0: all)")
    parser.add_argument("--eval_examples", type=int, default=1000, help="test images (0: all)")
    parser.add_argument("--attacks", default="fgsm,pgd20,autoattack", help="comma-separated attack names")
    parser.add_argument("--attack_options", default=None,
                        help='JSON overrides of the attacks\' settings, e.g. \'{"square": {"queries": 1000}}\'')
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--data_dir", default=None, help="tensorflow-datasets data directory")
    parser.add_argument("--download", action="store_true", help="let tfds download CIFAR-10 (needs network)")
    parser.add_argument("--output_dir", default="cifar10_smart")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --output_dir")
    parser.add_argument("--quantize", default="int8", choices=("none", "dynamic", "float16", "int8"))
    parser.add_argument("--attack_steps", type=int, default=7)
    parser.add_argument("--eps_warmup", type=int, default=5)
    parser.add_argument("--mask_warmup", type=int, default=5)
    parser.add_argument("--mask_score", default="snip", choices=("snip", "magnitude", "random", "learned"))
    parser.add_argument("--density", default="0.35,0.35", help="d_clean,d_adv")
    parser.add_argument("--tradeoffs", default="0,1", help="comma-separated trade-offs to evaluate and export")
    parser.add_argument("--tradeoff_mode", default=None, choices=("switch", "blend", "noise"))
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--run_eagerly", action="store_true", help="no train-step graph (quick smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    return parser.parse_args(argv)


def _floats(text):
    return tuple(float(v) for v in text.split(","))


if __name__ == "__main__":
    args = _parse_args()
    try:
        main(
            epochs=args.epochs,
            max_examples=args.max_examples or None,
            eval_examples=args.eval_examples or None,
            attacks=tuple(a.strip() for a in args.attacks.split(",") if a.strip()),
            attack_options=json.loads(args.attack_options) if args.attack_options else None,
            batch_size=args.batch_size,
            data_dir=args.data_dir and os.path.expanduser(args.data_dir),
            download=args.download,
            output_dir=args.output_dir,
            overwrite=args.overwrite,
            quantize=None if args.quantize == "none" else args.quantize,
            attack_steps=args.attack_steps,
            eps_warmup=args.eps_warmup,
            mask_warmup=args.mask_warmup,
            mask_score=args.mask_score,
            density=_floats(args.density),
            tradeoffs=_floats(args.tradeoffs),
            tradeoff_mode=args.tradeoff_mode,
            learning_rate=args.learning_rate,
            run_eagerly=args.run_eagerly,
            seed=args.seed,
            verbose=args.verbose,
        )
    except (keras_smart.data.DataNotAvailableError, cli.RunExistsError, cli.OutputDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
