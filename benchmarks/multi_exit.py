"""Multi-exit (RDI-Nets) vs single-exit digits CNNs: accuracy, worst-case robustness and compute; prints JSON.

Trains four models on the embedded MNIST digits with the same budget (epochs,
examples, batch, attack), all once-for-all adversarially trained with the
package's defaults (OAT trade-offs, SMART blend mode):

- "single_dense" / "single_smart": the digits CNN, SMART conversion without masks
  (dense) or with SNIP masks at the CLI's per-path densities;
- "multi_dense" / "multi_smart": the same CNN with two exits attached
  (`keras_smart.exits.attach(after=["pool1", "pool2"])`, default heads), trained
  with the max-average attack (RDI-Nets' default).

For each multi-exit model and trade-off (0 and 1) an exit policy is calibrated
on 500 held-out digits (not in the evaluation set) for expected MACs of
`--macs_share` (default 0.65) of the single-exit model's at that trade-off (SMART's
paths differ in MACs), and evaluated on the
other 500 test digits with the policy applied to every input, clean and
attacked: the paper's attacks, the adaptive ones that follow the policy, and
Square on the routed logits; "worst_case" is per example over all of them.
Single-exit models are judged by AutoAttack (APGD-CE, APGD-T, Square) and PGD-20.
The staged LiteRT bundle of "multi_smart" at trade-off 1 is timed against its
single file. Last, the trade-off grid (lam x budget) of "multi_smart": the triple knob.

Usage:
  python benchmarks/multi_exit.py [--epochs 4] [--out result.json]
"""

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import backbones
from keras_smart import export

keras = _compat.keras

EXITS = ["pool1", "pool2"]
TRADEOFFS = (0.0, 1.0)


def _dataset(x, y, batch_size, seed):
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(batch_size)


def train(name, args, x, y):
    """One model trained once-for-all: "single_*" or "multi_*", "*_dense" (no masks) or "*_smart"."""
    keras.utils.set_random_seed(args.seed)
    base = backbones.digits_cnn()
    if name.startswith("multi"):
        base = keras_smart.exits.attach(base, after=EXITS)
    model = keras_smart.convert(base, "smart", tradeoff_mode="blend")
    model.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    attack = keras_smart.AttackConfig(eps=args.eps, steps=args.train_steps)
    callbacks = [keras_smart.callbacks.AdversarialCallback(attack=attack, eps_schedule=1, seed=args.seed)]
    data = _dataset(x, y, args.batch_size, args.seed)
    if name.endswith("smart"):
        callbacks.append(keras_smart.callbacks.MaskUpdate(
            data.take(4), score="snip", density=(0.1, 0.35), allocation="global", warmup_epochs=1
        ))
    started = time.perf_counter()
    model.fit(data, epochs=args.epochs, callbacks=callbacks, verbose=0)
    return model, time.perf_counter() - started


def _single_row(model, tradeoff, args, x, y):
    options = {
        "apgd-ce": {"steps": args.apgd_steps},
        "apgd-dlr": {"steps": args.apgd_steps},
        "square": {"queries": args.square_queries},
    }
    report = keras_smart.evaluate_tradeoff(
        model, (x, y), tradeoffs=(tradeoff,), attacks=("pgd20", "autoattack"), eps=args.eps,
        attack_options=options, progress=False, seed=args.seed,
    )
    row = report.rows[0]
    return {key: row[key] for key in ("clean", "pgd20", "autoattack", "worst_case", "macs")}


def _multi_row(model, tradeoff, budget, args, held_out, test, attacks):
    keras_smart.set_tradeoff(model, tradeoff)
    policy = keras_smart.exits.calibrate(model, held_out, budget=budget)
    report = keras_smart.evaluate_tradeoff(
        model, test, tradeoffs=(tradeoff,), attacks=attacks, eps=args.eps, policy=policy, progress=False,
        seed=args.seed, attack_options={"square": {"queries": args.square_queries}},
    )
    row = dict(report.rows[0])
    row["thresholds"] = list(policy.thresholds)
    return row, policy


def _staged_latency(model, policy, tradeoff, x_check, x_time):
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = os.path.join(tmp, "bundle")
        export.bundle(model, out_dir, tradeoffs=(tradeoff,), policy=policy, check_data=x_check)
        return export.staged_latency(out_dir, x_time, tradeoff=tradeoff)


def main(args):
    x_train, y_train = keras_smart.data.digits("train")
    x_test, y_test = keras_smart.data.digits("test")
    if args.train_examples:
        x_train, y_train = x_train[: args.train_examples], y_train[: args.train_examples]
    held_out = (x_test[:500], y_test[:500])  # calibration only
    test = (x_test[500:500 + args.examples], y_test[500:500 + args.examples])
    result = {
        "benchmark": "multi_exit",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "keras": keras_smart.KERAS_FLAVOUR,
                    "tensorflow": tf.__version__},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "exits": EXITS,
        "models": {},
    }
    models = {}
    for name in ("single_dense", "single_smart", "multi_dense", "multi_smart"):
        model, seconds = train(name, args, x_train, y_train)
        models[name] = model
        entry = {"train_seconds": round(seconds, 1)}
        if name.startswith("single"):
            entry["rows"] = {f"{t:g}": _single_row(model, t, args, *test) for t in TRADEOFFS}
        result["models"][name] = entry
        print(json.dumps({name: entry}), flush=True)
    for name in ("multi_dense", "multi_smart"):
        model, single = models[name], result["models"][name.replace("multi", "single")]
        entry = result["models"][name]
        entry["exit_macs"], entry["rows"], entry["compared"] = {}, {}, {}
        for t in TRADEOFFS:
            macs = keras_smart.exits.exit_macs(model, tradeoff=t)  # the path t selects: SMART's paths differ
            entry["exit_macs"][f"{t:g}"] = list(macs)
            single_row = single["rows"][f"{t:g}"]
            budget = min(1.0, args.macs_share * single_row["macs"] / macs[-1])
            row, policy = _multi_row(model, t, budget, args, held_out, test, ("fgsm", "pgd20"))
            entry["rows"][f"{t:g}"] = row
            entry["compared"][f"{t:g}"] = {
                "macs_vs_single": row["macs"] / single_row["macs"] if row.get("macs") else None,
                "clean_delta": row["clean"] - single_row["clean"],
                "worst_case_delta": row["worst_case"] - single_row["worst_case"],
            }
            if name == "multi_smart" and t == 1.0:
                entry["staged_latency"] = _staged_latency(model, policy, t, x_test[:16], test[0][: args.latency_examples])
        print(json.dumps({name: entry}, default=float), flush=True)
    grid = []
    model = models["multi_smart"]
    grid_test = (test[0][: args.grid_examples], test[1][: args.grid_examples])
    for t in args.grid_tradeoffs:
        for budget in args.grid_budgets:
            try:
                row, _ = _multi_row(model, t, budget, args, held_out, grid_test, ("pgd10",))
            except ValueError as error:  # a budget below the cheapest exit
                grid.append({"tradeoff": t, "budget": budget, "error": str(error).split(".")[0]})
                continue
            grid.append({"tradeoff": t, "budget": budget, **{k: row[k] for k in ("clean", "worst_case", "expected_macs",
                                                                              "exit_shares", "macs")}})
    result["grid"] = grid
    result["targets"] = _targets(result)
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


def _targets(result):
    """The issue's targets, as measured."""
    found = {}
    for name in ("multi_dense", "multi_smart"):
        compared = result["models"][name]["compared"]
        found[name] = {
            t: {
                "macs_vs_single<=0.65": c["macs_vs_single"] is not None and c["macs_vs_single"] <= 0.65 + 1e-9,
                "clean_within_1_point": c["clean_delta"] >= -0.01,
                "worst_case_within_1_point": c["worst_case_delta"] >= -0.01,
            }
            for t, c in compared.items()
        }
    latency = result["models"]["multi_smart"].get("staged_latency")
    if latency:
        found["staged_latency<=0.75"] = latency["staged_ms"] <= 0.75 * latency["single_ms"]
    return found


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train_examples", type=int, default=0, help="0: all 4,000 training digits")
    parser.add_argument("--examples", type=int, default=500, help="evaluation digits (after the 500 held out)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--train_steps", type=int, default=7, help="PGD steps in training")
    parser.add_argument("--apgd_steps", type=int, default=50)
    parser.add_argument("--square_queries", type=int, default=1000)
    parser.add_argument("--macs_share", type=float, default=0.65, help="policy MACs as a share of the single-exit model's")
    parser.add_argument("--latency_examples", type=int, default=300)
    parser.add_argument("--grid_examples", type=int, default=200)
    parser.add_argument("--grid_tradeoffs", type=lambda s: [float(v) for v in s.split(",")], default=[0.0, 0.5, 1.0])
    parser.add_argument("--grid_budgets", type=lambda s: [float(v) for v in s.split(",")], default=[0.25, 0.45, 0.7, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(_parse())
