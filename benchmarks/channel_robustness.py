"""What channel structure costs under AutoAttack: channel-structured vs unstructured SMART masks at equal non-zeros.

Trains, on the embedded digits (4,000 training digits), the same SMART model of
`keras_smart.backbones.digits_cnn()` (Keras's default batch-norm momentum)
with the same seed and recipe, differing only in the masks' structure:

- "channel": `MaskUpdate(score="magnitude", granularity="channel")`: whole
  output channels per path, magnitude scores after one dense epoch, layer
  allocation (every channel group keeps round(density * channels) channels;
  the logits layer, the model's output, stays dense);
- "unstructured": at the same epoch the same channel design is made, then each
  kernel's masks are replaced by its top-|W| weights (unstructured magnitude
  masks) with exactly the channel masks' non-zeros per layer and path, as
  `count_nonzero` counts them;
- "unstructured_effective": the same with the non-zeros per layer and path of
  the *compacted* channel model (`strip(..., compact=True)`) at the design
  epoch: a channel mask also silences the weights that read a dropped input
  channel, which `count_nonzero` still counts, so the compacted model
  computes with fewer.

Recipe (benchmarks/density_grid.py's, magnitude scores): SMART switch mode, trade-offs
(0, 1) with half of each batch clean, Adam 1e-3, batch 64, --epochs epochs of
PGD-7 at L-inf eps 0.3 (eps warmed up over --warmup epochs), batch-norm
recalibrated per path at the end of fit. Each model is judged at lam 0 and 1 by
`keras_smart.evaluate_tradeoff` on the first 500 test digits with the package's
AutoAttack reduced as in `keras-smart demo` (APGD-CE 50 steps, APGD-T 3 targets
x 50 steps, Square 1,000 queries; --full_autoattack: the standard settings),
plus clean accuracy on all 1,000 test digits, non-zeros, non-zero MACs and the
executed MACs of the file each path exports to (compacted for the channel
model; dense-layout for the unstructured ones, as LiteRT runs them).

Run: python benchmarks/channel_robustness.py [--epochs 10] [--out benchmarks/results/channel_robustness_digits.json]
Prints one JSON object per model as it finishes, then the whole report. Not a test.
"""

import argparse
import json
import os
import platform
import time

import numpy as np
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import backbones
from keras_smart import callbacks

keras = _compat.keras

EPS = 0.3
EVAL_EXAMPLES = 500
REDUCED_AUTOATTACK = {
    "apgd-ce": {"steps": 50},
    "apgd-dlr": {"steps": 50, "target_classes": 3},
    "square": {"queries": 1000},
}
VARIANTS = ("channel", "unstructured", "unstructured_effective")


def _nominal_counts(model):
    """{layer: {mask name: non-zeros}} of the model's masks."""
    return {
        layer: {name: int(np.count_nonzero(mask)) for name, mask in masks.items()}
        for layer, masks in keras_smart.get_masks(model).items()
    }


def _effective_counts(model):
    """{layer: {mask name: non-zero kernel weights of that layer in the compacted model of the mask's path}}."""
    counts = {}
    for lam, path in ((0.0, "clean"), (1.0, "adv")):
        compacted = keras_smart.strip(model, tradeoff=lam, compact=True)
        for layer, masks in keras_smart.get_masks(model).items():
            for name in masks:
                if f"_{path}_mask" in name:
                    kernel = getattr(compacted.get_layer(layer), model.get_layer(layer).mask_kernel_name(name))
                    counts.setdefault(layer, {})[name] = int(np.count_nonzero(kernel.numpy()))
    return counts


def _top_magnitude(model, counts):
    """Unstructured masks: each kernel's `counts[layer][mask]` largest-|W| weights."""
    masks = {}
    for layer_name, per_mask in counts.items():
        layer = model.get_layer(layer_name)
        for name, count in per_mask.items():
            weights = np.abs(getattr(layer, layer.mask_kernel_name(name)).numpy())
            mask = np.zeros(weights.size, np.float32)
            mask[np.argsort(-weights, axis=None, kind="stable")[:count]] = 1.0
            masks.setdefault(layer_name, {})[name] = mask.reshape(weights.shape)
    return masks


class MatchedUnstructured(callbacks.MaskUpdate):
    """MaskUpdate that designs channel masks, then sets unstructured top-|W| masks of the same per-layer non-zeros.

    `match="nominal"`: the channel masks' non-zeros (`count_nonzero`);
    `"effective"`: the compacted channel model's. `counts` keeps what was matched.
    """

    def __init__(self, match, **kwargs):
        super().__init__(score="magnitude", granularity="channel", **kwargs)
        self.match = match
        self.counts = None

    def on_epoch_begin(self, epoch, logs=None):
        if not self.due(epoch):
            return
        super().on_epoch_begin(epoch, logs)
        self.counts = _nominal_counts(self.model) if self.match == "nominal" else _effective_counts(self.model)
        keras_smart.set_masks(self.model, _top_magnitude(self.model, self.counts))


def _train(args, variant, x, y):
    keras.utils.set_random_seed(args.seed)
    smart = keras_smart.convert(backbones.digits_cnn(), "smart")
    smart.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    options = {"density": tuple(args.density), "warmup_epochs": 1, "seed": args.seed}
    if variant == "channel":
        masks = callbacks.MaskUpdate(score="magnitude", granularity="channel", **options)
    else:
        masks = MatchedUnstructured("nominal" if variant == "unstructured" else "effective", **options)
    adversarial = callbacks.AdversarialCallback(
        attack=keras_smart.AttackConfig(eps=EPS, steps=7), eps_schedule=args.warmup, tradeoffs=(0.0, 1.0),
        clean_share=0.5, seed=args.seed,
    )
    started = time.perf_counter()
    smart.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0, callbacks=[adversarial, masks])
    return smart, time.perf_counter() - started


def _judge(args, model, x_test, y_test):
    """{lam: row} with the report's columns, clean accuracy on all test digits and the exported file's MACs."""
    report = keras_smart.evaluate_tradeoff(
        model, (x_test, y_test), tradeoffs=(0.0, 1.0), attacks=("autoattack",), eps=EPS,
        max_examples=args.eval_examples, attack_options=None if args.full_autoattack else REDUCED_AUTOATTACK,
        progress=False,
    )
    dense_macs = keras_smart.count_nonzero(model).macs_dense
    rows = {}
    for row in report.rows:
        lam = row["tradeoff"]
        keras_smart.set_tradeoff(model, lam)
        clean = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))
        out = {key: row[key] for key in ("clean", "autoattack", "worst_case", "nonzero", "macs")}
        out["clean_1000"] = clean
        try:
            compacted = keras_smart.strip(model, tradeoff=lam, compact=True)
        except ValueError:  # unstructured masks: the file keeps the dense layout
            out["macs_executed"] = dense_macs
        else:
            counts = keras_smart.count_nonzero(compacted)
            out.update(macs_executed=counts.macs_dense, compacted_nonzero=counts.clean,
                       compacted_params=int(compacted.count_params()))
        rows[str(lam)] = out
    return rows, list(report.warnings)


def main(args):
    x, y = keras_smart.data.digits("train")
    x_test, y_test = keras_smart.data.digits("test")
    if args.train_examples:  # a quick look; the report's numbers use all 4,000
        x, y = x[: args.train_examples], y[: args.train_examples]
    results = {}
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise ValueError(f"--variants: each one of {VARIANTS}. Received: {variant!r}")
        model, train_seconds = _train(args, variant, x, y)
        started = time.perf_counter()
        rows, warnings = _judge(args, model, x_test, y_test)
        results[variant] = {
            "train_seconds": round(train_seconds, 1),
            "eval_seconds": round(time.perf_counter() - started, 1),
            "rows": rows,
            "nonzero_per_layer": _nominal_counts(model),
            "warnings": warnings,
        }
        if variant == "channel":
            results[variant]["compacted_nonzero_per_layer"] = _effective_counts(model)
        print(json.dumps({variant: results[variant]}), flush=True)
    # "unstructured" must hold exactly the channel model's non-zeros per layer and path (count_nonzero).
    # "unstructured_effective" holds the compacted channel model's as they stood when the masks were designed;
    # which dropped channels compaction can remove depends on the batch-norm shifts (a dropped channel whose
    # shift stays positive through ReLU feeds a zero-padded convolution a constant it cannot fold), so the
    # channel model's compacted non-zeros at the end of training are given beside them.
    matched = {}
    if "channel" in results and "unstructured" in results:
        matched["unstructured"] = results["unstructured"]["nonzero_per_layer"] == results["channel"]["nonzero_per_layer"]
    if "channel" in results and "unstructured_effective" in results:
        matched["unstructured_effective"] = {
            "nonzero_at_design": results["unstructured_effective"]["nonzero_per_layer"],
            "channel_compacted_nonzero_after_training": results["channel"]["compacted_nonzero_per_layer"],
        }
    report = {
        "benchmark": "channel_robustness",
        "keras_flavour": _compat.FLAVOUR,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}, "
                   f"load average {os.getloadavg()[0]:.2f}",
        "setup": {
            "model": "keras_smart.backbones.digits_cnn() (width 32), SMART switch mode, trade-offs (0, 1), "
                     "clean share 0.5",
            "training": f"{args.epochs} epochs, batch 64, Adam 1e-3, PGD-7 at L-inf eps {EPS}, eps warm-up over "
                        f"{args.warmup} epochs, batch-norm recalibrated at the end of fit, seed {args.seed}",
            "masks": f"magnitude scores after one dense epoch, layer allocation, densities {list(args.density)} "
                     "(channel groups; the unstructured models match the channel model's non-zeros per layer "
                     "and path)",
            "evaluation": f"first {args.eval_examples} test digits, AutoAttack "
                          + ("standard" if args.full_autoattack else f"reduced {REDUCED_AUTOATTACK}")
                          + "; clean_1000: all 1,000 test digits",
            "macs": "macs: non-zero MACs (count_nonzero); macs_executed: MACs of the exported file's kernels "
                    "(compacted channel model; the dense layout for unstructured masks)",
        },
        "nonzero_matched_to_channel": matched,
        "models": results,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="epochs of the eps warm-up")
    parser.add_argument("--density", type=float, nargs=2, default=(0.5, 0.3), metavar=("CLEAN", "ADV"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_examples", type=int, default=0, help="0: all 4,000 training digits")
    parser.add_argument("--eval_examples", type=int, default=EVAL_EXAMPLES, help="test digits attacked")
    parser.add_argument("--full_autoattack", action="store_true")
    parser.add_argument("--out", default=None)
    main(parser.parse_args())
