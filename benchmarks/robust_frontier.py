"""The trade-off frontier under AutoAttack: `evaluate_tradeoff` on saved digits models, with baselines.

Trains nothing: it evaluates `.keras` files that `benchmarks/tradeoff_frontier.py
--save_dir DIR --save RUN` writes (a SmartModel, and plain baselines such as
"standard" and "pgd_at"), on the embedded test digits, with AutoAttack's
standard settings by default (APGD-CE 100 steps, APGD-T 9 targets x 100 steps,
Square 5,000 queries), plus FGSM and PGD-20. Writes report.json, report.md and
frontier.png into --out_dir and prints one JSON object. Not a test.

Run:
  python benchmarks/tradeoff_frontier.py --runs standard,pgd_at,smart_switch_snip_global \\
      --save standard,pgd_at,smart_switch_snip_global --save_dir runs
  python benchmarks/robust_frontier.py --model runs/smart_switch_snip_global.keras --tradeoffs 0,1 \\
      --baseline standard=runs/standard.keras --baseline pgd_at=runs/pgd_at.keras --out_dir runs/eval
"""

import argparse
import json
import os
import platform
import time

import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import evaluation

keras = _compat.keras


def _load(path):
    return keras.models.load_model(path, compile=False)


def main(args):
    x, y = keras_smart.data.digits("test")
    options = {
        "apgd-ce": {"steps": args.apgd_steps},
        "apgd-dlr": {"steps": args.apgd_steps, "target_classes": args.target_classes},
        "square": {"queries": args.square_queries},
    }
    shared = {
        "attacks": tuple(args.attacks.split(",")),
        "eps": args.eps,
        "max_examples": args.examples or None,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "attack_options": options,
        "progress": args.progress,
    }
    os.makedirs(args.out_dir, exist_ok=True)
    baselines, reports = {}, {}
    for spec in args.baseline:
        label, path = spec.split("=", 1)
        started = time.perf_counter()
        if path.endswith(".json"):  # a report saved earlier (report.json of a plain model)
            with open(path) as f:
                report = evaluation.TradeoffReport.from_json(f.read())
        else:
            report = evaluation.evaluate_tradeoff(_load(path), (x, y), **shared)
            with open(os.path.join(args.out_dir, f"baseline_{label}.json"), "w") as f:
                f.write(report.to_json())
        reports[label] = {"seconds": round(time.perf_counter() - started, 1), **report.to_dict()}
        baselines[label] = report
    started = time.perf_counter()
    if args.model.endswith(".json"):
        with open(args.model) as f:
            report = evaluation.TradeoffReport.from_json(f.read())
    else:
        tradeoffs = tuple(float(l) for l in args.tradeoffs.split(","))
        report = evaluation.evaluate_tradeoff(_load(args.model), (x, y), tradeoffs=tradeoffs, **shared)
    seconds = round(time.perf_counter() - started, 1)
    with open(os.path.join(args.out_dir, "report.json"), "w") as f:
        f.write(report.to_json())
    with open(os.path.join(args.out_dir, "report.md"), "w") as f:
        f.write(report.to_markdown() + "\n")
        for label, baseline in baselines.items():
            f.write(f"\nBaseline {label}:\n\n{baseline.to_markdown()}\n")
    plot = report.plot(os.path.join(args.out_dir, "frontier.png"), baselines=baselines or None)
    print(
        json.dumps(
            {
                "model": args.model,
                "seconds": seconds,
                "report": report.to_dict(),
                "baselines": reports,
                "plot": plot,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}, {_compat.FLAVOUR}",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a SmartModel .keras file (or .json: re-plot a saved report)")
    parser.add_argument(
        "--baseline", action="append", default=[],
        help="label=path.keras of a plain model to evaluate, or label=report.json of one evaluated before",
    )
    parser.add_argument("--out_dir", default="robust_frontier")
    parser.add_argument("--attacks", default="fgsm,pgd20,autoattack")
    parser.add_argument("--tradeoffs", default="0,0.2,0.4,0.6,0.8,1", help="trade-offs of the SmartModel")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--examples", type=int, default=0, help="0: all 1,000 test digits")
    parser.add_argument("--apgd_steps", type=int, default=100)
    parser.add_argument("--target_classes", type=int, default=9)
    parser.add_argument("--square_queries", type=int, default=5000)
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    main(parser.parse_args())
