"""What batch-norm's per-lam grouping in the train step costs in step time: an in-process ablation.

The train step normalises each lam value's rows as their own batch
(`keras_smart.layers.base.batch_norm_groups`). This benchmark builds two
identical models per method on the digits CNN (batch-norm at Keras's default
momentum), the second traced with the grouping switched off (the step's
`_batch_norm_groups` made to name no values: an ablation, not a user option),
and times them in alternating blocks of `fit(steps_per_epoch=steps)` in one
process, so that the machine's drift affects both alike. Prints JSON: per method
the first `fit`'s seconds (tracing included) and the median seconds per step,
with and without the grouping, and their ratio.

  python benchmarks/bn_grouping_cost.py --methods smart,float,oat
"""

import argparse
import json
import statistics
import time

import keras_smart
from keras_smart import _compat
from keras_smart import backbones
from keras_smart import data
from keras_smart.layers import base

keras = _compat.keras


def _model(method, grouped, x, y, args):
    """A compiled, traced SmartModel and its callback; `grouped=False` traces the step without the grouping."""
    keras.utils.set_random_seed(args.seed)
    options = {"tradeoff_mode": "blend"} if method == "smart_blend" else {}
    smart = keras_smart.convert(backbones.digits_cnn(width=32), method.split("_")[0], **options)
    if method.startswith(("smart", "floats")):
        density = (0.5, 0.5) if method.startswith("smart") else 0.5
        keras_smart.design_masks(smart, score="random", density=density, seed=args.seed)
    if not grouped:
        smart._batch_norm_groups = lambda lam: base.batch_norm_groups((), lam)  # pylint: disable=protected-access
    smart.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = keras_smart.callbacks.AdversarialCallback(
        attack=keras_smart.AttackConfig(eps=0.3, steps=args.attack_steps), recalibrate=False
    )
    start = time.perf_counter()
    smart.fit(x, y, batch_size=args.batch_size, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[callback])
    return smart, callback, time.perf_counter() - start


def measure(method, x, y, args):
    models = {grouped: _model(method, grouped, x, y, args) for grouped in (False, True)}
    seconds = {False: [], True: []}
    for round_ in range(args.rounds):
        for grouped in (False, True) if round_ % 2 == 0 else (True, False):
            smart, callback, _ = models[grouped]
            start = time.perf_counter()
            smart.fit(x, y, batch_size=args.batch_size, epochs=1, steps_per_epoch=args.steps, verbose=0,
                      callbacks=[callback])
            seconds[grouped].append((time.perf_counter() - start) / args.steps)
    step = {grouped: statistics.median(times) for grouped, times in seconds.items()}
    return {
        "first_fit_seconds": {"without": round(models[False][2], 2), "with": round(models[True][2], 2)},
        "seconds_per_step": {"without": round(step[False], 4), "with": round(step[True], 4)},
        "step_ratio_with_over_without": round(step[True] / step[False], 3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="smart,smart_blend,float,oat")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="training steps per timed block")
    parser.add_argument("--rounds", type=int, default=6, help="timed blocks per variant, alternating")
    parser.add_argument("--attack_steps", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x, y = data.digits("train")
    results = {method: measure(method, x, y, args) for method in args.methods.split(",")}
    settings = {
        "backbone": "digits_cnn(width=32)", "batch_size": args.batch_size, "attack": f"PGD-{args.attack_steps}",
        "tradeoffs": list(keras_smart.config.OAT_TRADEOFFS), "sampling": "element", "steps_per_block": args.steps,
        "rounds": args.rounds, "keras": "tf_keras" if _compat.IS_LEGACY else "keras 3",
    }
    print(json.dumps({"settings": settings, "methods": results}, indent=1))


if __name__ == "__main__":
    main()
