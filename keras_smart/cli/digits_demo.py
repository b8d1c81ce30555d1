"""`keras-smart demo`: convert, train SMART, evaluate the frontier and export the bundle on the embedded digits."""

import dataclasses
import pathlib
import time

import keras_smart
from keras_smart.cli import run_dir as run_dir_lib
from keras_smart.cli import runs
from keras_smart.cli import settings as settings_lib

# The CLI's defaults: SMART's blend mode with OAT's trade-offs, snip masks allocated globally at
# densities (0.1, 0.35) (BENCHMARKS.md: per-path densities, judged by AutoAttack).
DEMO_SETTINGS = settings_lib.TrainSettings()
DEMO_TRADEOFFS = (0.0, 1.0)
DEMO_ATTACKS = ("fgsm", "pgd20", "autoattack")
DEMO_EVAL_EXAMPLES = 500
DEMO_OUTPUT_DIR = "keras_smart_demo"
# AutoAttack shrunk to fit the demo's minutes (the report states it): APGD-CE and APGD-T at 50
# steps, 3 target classes, Square at 1,000 queries. `keras-smart evaluate` runs the standard suite.
DEMO_ATTACK_OPTIONS = {
    "apgd-ce": {"steps": 50},
    "apgd-dlr": {"steps": 50, "target_classes": 3},
    "square": {"queries": 1000},
}


def _check_replaceable(run_dir):
    """The demo replaces its output directory, but only an empty one or an earlier run."""
    run_dir_lib.check_output_dir(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / run_dir_lib.CONFIG).exists():
        raise run_dir_lib.RunExistsError(
            f"{run_dir} is not empty and not a keras-smart run: the demo replaces its output directory. "
            "Choose another --output_dir."
        )


def demo(output_dir=DEMO_OUTPUT_DIR, *, epochs=None, max_examples=0, eval_examples=DEMO_EVAL_EXAMPLES,
         attacks=DEMO_ATTACKS, quantize="int8", verbose=1):
    """The main job on the embedded digits: convert, train SMART, evaluate the frontier, export the bundle.

    Prints what it does and where it wrote it (this is the `keras-smart demo` command).

    Args:
      output_dir: the run directory; an earlier run there is replaced, a
        non-empty directory that is not a keras-smart run is refused.
      epochs: training epochs (None: `DEMO_SETTINGS.epochs`).
      max_examples: train on only the first this many digits (0: all).
      eval_examples: test digits evaluated on.
      attacks: the attacks evaluated.
      quantize: the bundle's quantization (None: float32).
      verbose: Keras' progress bar setting; 0 also silences the evaluation's.

    Returns:
      (the `TradeoffReport`, the bundle's metadata).
    """
    start = time.perf_counter()
    settings = dataclasses.replace(DEMO_SETTINGS, epochs=epochs or DEMO_SETTINGS.epochs, max_examples=max_examples)
    run_dir = pathlib.Path(output_dir)
    _check_replaceable(run_dir)
    print(f"keras-smart demo: SMART on the embedded MNIST digits ({keras_smart.KERAS_FLAVOUR}); "
          f"run directory {run_dir}")
    runs.train(settings, run_dir, overwrite=True, verbose=verbose)
    trained = time.perf_counter()
    report = runs.evaluate(run_dir, tradeoffs=DEMO_TRADEOFFS, attacks=attacks, max_examples=eval_examples,
                           attack_options=DEMO_ATTACK_OPTIONS, progress=bool(verbose))
    evaluated = time.perf_counter()
    bundle = runs.export(run_dir, tradeoffs=DEMO_TRADEOFFS, quantize=quantize)
    done = time.perf_counter()
    print()
    print(report.to_markdown())
    print(f"\ntrained in {trained - start:.0f}s, evaluated in {evaluated - trained:.0f}s, "
          f"exported in {done - evaluated:.0f}s; total {done - start:.0f}s")
    print(f"model:   {run_dir / run_dir_lib.MODEL}")
    print(f"report:  {run_dir / run_dir_lib.REPORT / 'report.md'} (+ report.json, frontier.png)")
    print(runs.describe_bundle(bundle, run_dir / run_dir_lib.BUNDLE))
    print(f"logs:    tensorboard --logdir {run_dir / run_dir_lib.LOGS}")
    return report, bundle
