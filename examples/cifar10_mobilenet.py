"""SMART on CIFAR-10 with MobileNetV2, end to end: train once-for-all, evaluate the frontier, export for Android.

Run (CIFAR-10 must be prepared in tensorflow-datasets, see below):

  python examples/cifar10_mobilenet.py --data_dir=~/tensorflow_datasets --output_dir=cifar10_smart
  python examples/cifar10_mobilenet.py --epochs=1 --max_examples=2048 --eval_examples=256 --attacks=fgsm,pgd20

The recipe is `keras-smart train` / `evaluate` / `export` (keras_smart/cli.py)
written out: `keras_smart.data.load` (pad-crop and flip augmentation), the
`mobilenet_v2` backbone (untrained, logits out), `keras_smart.convert(..., "smart")`,
`fit` with `AdversarialCallback` (OAT's per-example lam, in-graph PGD-7 at
eps = 8/255 with a linear eps warm-up) and `MaskUpdate` (a dense warm-up, then
SNIP masks per path), then `keras_smart.evaluate_tradeoff` on the test split
(report.md, report.json, frontier.png) and `keras_smart.export.bundle` (one
int8 LiteRT file per trade-off, labels.txt, smart.json).

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

import numpy as np

import keras_smart
from keras_smart import _compat

keras = _compat.keras

DATASET = "cifar10"
BACKBONE = "mobilenet_v2"
EPS = 8 / 255


def _arrays(dataset):
    """A dataset of (x, y) batches as two arrays."""
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


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
    quantize="int8",
    attack_steps=7,
    eps_warmup=5,
    mask_warmup=5,
    mask_score="snip",
    density=(0.35, 0.35),
    tradeoffs=(0.0, 1.0),
    tradeoff_mode=None,
    learning_rate=1e-3,
    shuffle_buffer=10_000,
    representative_examples=256,
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
      output_dir: where model.keras, history.csv, report.* and bundle/ are written
        (created; an existing bundle/ there is replaced).
      quantize: the bundle's quantization: None, "dynamic", "float16" or "int8"
        (int8 is calibrated on `representative_examples` training images and must
        agree with Keras on >= 98% of the check images, which a barely trained
        model may not).
      attack_steps: PGD steps of the training attack (eps = 8/255, step 2.5 * eps / steps).
      eps_warmup: epochs of linear eps warm-up (0: none).
      mask_warmup: dense epochs before the masks are designed (at most epochs - 1,
        so that the masks are always designed).
      mask_score: "snip", "magnitude", "random" or "learned" (see `design_masks`).
      density: (clean, adversarial) share of each kernel that each path keeps.
      tradeoffs: trade-offs lam to evaluate and to export. In SMART's default
        "switch" mode every lam > 0 selects the adversarial path, so (0, 1) covers
        the frontier; with tradeoff_mode="blend" list more.
      tradeoff_mode: SMART's `tradeoff_mode` (None: the layer default, "switch").
      learning_rate: Adam's learning rate.
      shuffle_buffer: the training shuffle buffer.
      representative_examples: training images used for int8 calibration and as
        the export's check inputs' source when quantize="int8".
      run_eagerly: train without tracing the train step: slower per step, but
        no graph to build, which for the adversarial step of MobileNetV2 takes
        minutes on a CPU; for smoke runs on a few batches.
      seed: seeds Keras, the shuffle, augmentation, lam draws and masks.
      verbose: Keras' progress-bar setting; 0 also silences the evaluation progress bar.

    Returns:
      A dict: "history" (fit's logs per epoch), "rows" (the report's rows),
      "report" (the `TradeoffReport`), "nonzero" (`count_nonzero` as a dict),
      "bundle" (the metadata written to smart.json), "files" (name -> path of
      what was written) and "seconds" (train / evaluate / export / total).

    Raises:
      keras_smart.data.DataNotAvailableError: CIFAR-10 is not prepared under
        `data_dir` and download=False.
      keras_smart.export.ExportError: a LiteRT file failed its check.
    """
    if epochs < 1:
        raise ValueError(f"`epochs` must be >= 1. Received: epochs={epochs!r}")
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)

    # 1. Data: fails here, before anything is built or written, when CIFAR-10 is not prepared.
    train = keras_smart.data.load(
        DATASET, "train", data_dir=data_dir, download=download, augment=True, shuffle_buffer=shuffle_buffer,
        batch_size=batch_size, max_examples=max_examples, seed=seed,
    )
    input_shape, labels = keras_smart.data.info(DATASET, data_dir)
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # 2. The backbone, converted: one kernel per layer, a clean and an adversarial mask, dual batch-norm.
    base = keras_smart.backbones.build(BACKBONE, input_shape, len(labels))
    options = {"tradeoff_mode": tradeoff_mode} if tradeoff_mode else {}
    smart = keras_smart.convert(base, "smart", **options)
    smart.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        run_eagerly=run_eagerly,
    )

    # 3. Once-for-all adversarial training; the masks are designed from the training signal after a warm-up.
    attack = keras_smart.AttackConfig(eps=EPS, steps=attack_steps)
    mask_update = keras_smart.callbacks.MaskUpdate(
        train.take(4), score=mask_score, density=density, warmup_epochs=min(mask_warmup, epochs - 1), seed=seed,
    )
    history = smart.fit(
        train,
        epochs=epochs,
        shuffle=False,
        verbose=verbose,
        callbacks=[
            keras_smart.callbacks.AdversarialCallback(attack=attack, eps_schedule=eps_warmup or None, seed=seed),
            mask_update,
            keras.callbacks.CSVLogger(str(out / "history.csv")),
        ],
    )
    smart.save(str(out / "model.keras"))
    counts = keras_smart.count_nonzero(smart)
    trained = time.perf_counter()

    # 4. The frontier on the test split: clean and attacked accuracy at each trade-off.
    x_test, y_test = _arrays(
        keras_smart.data.load(DATASET, "test", data_dir=data_dir, download=download, batch_size=1024,
                              max_examples=eval_examples)
    )
    report = keras_smart.evaluate_tradeoff(
        smart, (x_test, y_test), lambdas=tuple(tradeoffs), attacks=tuple(attacks), eps=EPS,
        batch_size=batch_size, seed=seed, attack_options=attack_options, progress=bool(verbose),
    )
    (out / "report.json").write_text(report.to_json())
    (out / "report.md").write_text(report.to_markdown())
    report.plot(str(out / "frontier.png"))
    evaluated = time.perf_counter()

    # 5. The Android bundle: one LiteRT file per trade-off, each checked against Keras before it is kept.
    representative = None
    if quantize == "int8":
        representative = _arrays(
            keras_smart.data.load(DATASET, "train", data_dir=data_dir, download=download, batch_size=1024,
                                  max_examples=representative_examples)
        )[0]
    metadata = keras_smart.export.bundle(
        smart, str(out / "bundle"), tradeoffs=tuple(tradeoffs), labels=labels, report=report, quantize=quantize,
        representative_data=representative, check_data=x_test[:256], overwrite=True,
    )
    done = time.perf_counter()

    files = {
        "model": out / "model.keras",
        "history": out / "history.csv",
        "report_json": out / "report.json",
        "report_md": out / "report.md",
        "frontier": out / "frontier.png",
        "bundle": out / "bundle",
    }
    if verbose:
        print()
        print(report.to_markdown())
        print(f"\nnon-zero kernel weights: clean {counts.clean / counts.total:.1%}, adversarial "
              f"{counts.adv / counts.total:.1%}, union {counts.union / counts.total:.1%} of {counts.total:,}")
        for entry in metadata["files"]:
            print(f"{entry['file']}: {entry['size_bytes'] / 1e6:.2f} MB, {entry['quantize'] or 'float32'}, "
                  f"top-1 agreement with Keras {entry['check']['top1_agreement']:.1%}")
        print(f"\ntrained in {trained - start:.0f}s, evaluated in {evaluated - trained:.0f}s, exported in "
              f"{done - evaluated:.0f}s; written to {out}")
    return {
        "history": history.history,
        "rows": [dict(row) for row in report.rows],
        "report": report,
        "nonzero": counts.as_dict(),
        "bundle": metadata,
        "files": {name: str(path) for name, path in files.items()},
        "seconds": {
            "train": trained - start,
            "evaluate": evaluated - trained,
            "export": done - evaluated,
            "total": done - start,
        },
    }


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
    except keras_smart.data.DataNotAvailableError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
