"""The per-`fit` and per-model costs of adversarial training that a steady-state step time does not show.

Three measurements for `at_throughput.py` (its `--runs` entries of the same names):
- repeated_fit: `fit(epochs=1)` called N times vs one `fit(epochs=N)`, the same
  steps, both on one SMART model (digits CNN, `AdversarialCallback` with element
  sampling, the same callback object in every call). Round 0 (first traces) is
  discarded; then each round times both, one after the other; the ratio is of
  the medians. A step that is traced again in every `fit` call shows here. Run
  with the callback's end-of-fit batch-norm recalibration (its default: every
  call recalibrates on 16 batches, attacked) and without it.
- first_step: wall seconds from `fit` to the end of its first batch (tracing
  included) for a fresh model: `keras.applications.MobileNetV2(weights=None,
  input_shape=(96, 96, 3), classes=10, classifier_activation=None)` (logits)
  trained plainly vs its SMART conversion trained adversarially
  (`AdversarialCallback`, the same attack), and the SMART conversion's own plain
  `fit` (Keras traces a plain step twice when the optimizer's variables are
  created inside it; the callback creates them first). Random inputs: the trace
  does not depend on the data.
- weight_bytes: the bytes of every weight (size x dtype size) of MobileNetV2's
  SMART (and FLOAT) conversion over the dense model's.
"""

import dataclasses
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import callbacks

keras = _compat.keras

MOBILENET = {"weights": None, "input_shape": (96, 96, 3), "classes": 10, "classifier_activation": None}


def weight_bytes(model):
    """Sum over `model.weights` of element count x dtype size."""
    total = 0
    for weight in model.weights:
        dtype = tf.as_dtype(getattr(weight.dtype, "name", weight.dtype))
        total += int(np.prod(weight.shape)) * dtype.size
    return total


def _mobilenet(seed):
    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV2(**MOBILENET)


def weight_bytes_report(seed=0):
    """{"dense": bytes, "smart": bytes, "float": bytes, ratios} for MobileNetV2 at 96x96."""
    dense = _mobilenet(seed)
    smart = keras_smart.convert(dense, "smart")
    floating = keras_smart.convert(dense, "float")
    sizes = {"dense": weight_bytes(dense), "smart": weight_bytes(smart), "float": weight_bytes(floating)}
    return {
        "model": f"keras.applications.MobileNetV2({MOBILENET})",
        "bytes": sizes,
        "smart_over_dense": round(sizes["smart"] / sizes["dense"], 3),
        "float_over_dense": round(sizes["float"] / sizes["dense"], 3),
        "mask_dtypes": sorted(
            {str(getattr(w.dtype, "name", w.dtype)) for w in smart.weights if "mask" in _compat.weight_name(w)}
        ),
    }


class _FirstBatch(keras.callbacks.Callback):
    """Records when the first training batch ends."""

    def __init__(self):
        super().__init__()
        self.end = None

    def on_train_batch_end(self, batch, logs=None):
        if self.end is None:
            self.end = time.perf_counter()


def _first_step_seconds(model, data, extra_callbacks):
    marker = _FirstBatch()
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=1, verbose=0, callbacks=list(extra_callbacks) + [marker])
    return marker.end - start


def _first_step_in_this_process(variant, attack, compile_model, batch_size, seed):
    """First-batch seconds of one variant: "keras" (plain MobileNetV2, plain fit), "smart" (its SMART
    conversion, plain fit) or "adversarial" (the conversion with `AdversarialCallback`)."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size,) + MOBILENET["input_shape"]).astype("float32")
    y = rng.integers(0, MOBILENET["classes"], batch_size)
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch_size)
    model = _mobilenet(seed)
    extra = []
    if variant != "keras":
        model = keras_smart.convert(model, "smart")
        keras_smart.design_masks(model, score="random", density=(0.5, 0.5), seed=seed)
    if variant == "adversarial":
        extra = [callbacks.AdversarialCallback(attack=attack, seed=seed)]
    return _first_step_seconds(compile_model(model), data, extra)


def first_step_report(attack, batch_size=8, seed=0):
    """First-batch seconds (tracing included) of a plain MobileNetV2, its SMART conversion's plain `fit`
    and its adversarial `fit`, each in a fresh process (TensorFlow's function library grows with
    every model traced in a process, and so does the next trace's time)."""
    seconds = {}
    for variant in ("keras", "smart", "adversarial"):
        command = [sys.executable, __file__, variant, str(batch_size), str(seed), json.dumps(dataclasses.asdict(attack))]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        seconds[variant] = float(output.strip().splitlines()[-1])
    return {
        "model": f"keras.applications.MobileNetV2({MOBILENET}), batch {batch_size}, random inputs, a fresh process each",
        "plain_fit_first_step_seconds": round(seconds["keras"], 2),
        "smart_plain_fit_first_step_seconds": round(seconds["smart"], 2),
        "smart_adversarial_first_step_seconds": round(seconds["adversarial"], 2),
        "smart_over_plain": round(seconds["adversarial"] / seconds["keras"], 3),
        "smart_over_smart_plain": round(seconds["adversarial"] / seconds["smart"], 3),
    }


def repeated_fit_report(model, dataset, adversarial, epochs, steps, rounds):
    """Seconds of `epochs` x `fit(epochs=1)` vs one `fit(epochs=epochs)` on `model`, interleaved rounds.

    Args:
      model: a compiled SmartModel.
      dataset: an endless dataset of (x, y) batches.
      adversarial: the `AdversarialCallback` passed to every call.
      epochs: N.
      steps: steps per epoch.
      rounds: timed rounds (after one untimed warm-up round).
    """
    fit_args = dict(steps_per_epoch=steps, verbose=0, callbacks=[adversarial])

    def calls():
        start = time.perf_counter()
        for _ in range(epochs):
            model.fit(dataset, epochs=1, **fit_args)
        return time.perf_counter() - start

    def one_call():
        start = time.perf_counter()
        model.fit(dataset, epochs=epochs, **fit_args)
        return time.perf_counter() - start

    warmup = (calls(), one_call())
    timed = [(calls(), one_call()) for _ in range(rounds)]
    repeated = statistics.median(t[0] for t in timed)
    single = statistics.median(t[1] for t in timed)
    return {
        "epochs": epochs,
        "steps_per_epoch": steps,
        "warmup_seconds": [round(s, 2) for s in warmup],
        "fit_epochs_1_x_n_seconds": [round(t[0], 3) for t in timed],
        "fit_epochs_n_seconds": [round(t[1], 3) for t in timed],
        "repeated_over_single": round(repeated / single, 3),
    }


def measure(names, args, attack, *, compile_model, smart_digits, dataset):
    """{name: report, or {"error": ...}} for the measurements in `names` (at_throughput.py's settings `args`).

    Args:
      names: some of "repeated_fit", "first_step", "weight_bytes".
      args: at_throughput's parsed flags (seed, steps, fit_epochs, fit_rounds, first_step_batch, verbose).
      attack: the training `AttackConfig`.
      compile_model: compiles a model as the step-time runs do; returns it.
      smart_digits: () -> (a SMART digits model, its AdversarialCallback).
      dataset: () -> the endless training dataset of the digits.
    """
    results = {}
    for name in names:
        if args.verbose:
            print(f"measuring {name}", file=sys.stderr, flush=True)
        try:
            if name == "weight_bytes":
                results[name] = weight_bytes_report(args.seed)
            elif name == "first_step":
                results[name] = first_step_report(attack, args.first_step_batch, args.seed)
            else:
                results[name] = {}
                for recalibrate in (True, False):
                    model, callback = smart_digits()
                    callback.recalibrate = recalibrate
                    results[name][f"recalibrate={recalibrate}"] = repeated_fit_report(
                        compile_model(model), dataset(), callback, args.fit_epochs, args.steps, args.fit_rounds
                    )
        except Exception as error:  # pylint: disable=broad-except
            results[name] = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
    return results


def add_targets(overheads, targets):
    """Adds the issue's targets for the measurements in `overheads` to `targets` ({key: {value, pass}})."""
    checks = (
        ("repeated_fit", "recalibrate=True", "fit(epochs=1)_xN_within_1.10x_fit(epochs=N)", 1.10),
        ("repeated_fit", "recalibrate=False", "fit(epochs=1)_xN_within_1.10x_fit(epochs=N), no recalibration", 1.10),
        ("first_step", "smart_over_plain", "mobilenetv2_adversarial_first_step_within_2.5x_plain", 2.5),
        ("weight_bytes", "smart_over_dense", "smart_weight_bytes_within_1.5x_dense (MobileNetV2)", 1.5),
    )
    for name, key, target, bound in checks:
        value = overheads.get(name, {}).get(key)
        if isinstance(value, dict):
            value = value.get("repeated_over_single")
        if value is not None:
            targets[target] = {"value": value, "pass": value <= bound}


if __name__ == "__main__":  # one first-step variant (see first_step_report): prints its seconds
    _variant, _batch, _seed, _attack = sys.argv[1:5]
    _config = keras_smart.AttackConfig(**json.loads(_attack))
    _compiled = lambda m: (m.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]), m)[1]  # noqa: E731
    print(_first_step_in_this_process(_variant, _config, _compiled, int(_batch), int(_seed)))
