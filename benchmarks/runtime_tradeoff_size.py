"""Size and LiteRT latency of runtime-trade-off `.tflite` forms of a SMART digits CNN; prints JSON.

A runtime-trade-off file (lam as an input) stores, per dual-mask layer, what
each path needs. Forms compared, each against the baked file (one folded
kernel per layer, `to_tflite(tradeoff=1.0)`):
- two_kernels: today's form (`keras_smart.layers.separate_paths`): one constant
  float kernel per path, (1 - a) f(x; W*M_clean) + a f(x; W*M_adv).
- select: W once (float32) + both masks as bool constants (1 byte per weight);
  the path's kernel W * select(a, M_adv, M_clean) is computed at every invoke
  and the layer runs once with it (a run-time, non-constant kernel).
- select_layout: as select, with W and the masks stored in LiteRT's own kernel
  layout (FULLY_CONNECTED [out, in], CONV_2D [out, h, w, in]) so that no
  TRANSPOSE runs per invoke, and the mask applied by one SELECT_V2.
- shared_residual: constant kernels W*M_clean*M_adv (shared) and each path's
  residual, f(x; shared) + (1 - a) f(x; R_clean) + a f(x; R_adv): three dense
  float kernels (TFLite stores constants dense).
The model: `keras_smart.backbones.digits_cnn()` converted to SMART, masks by
`design_masks(score=--score, density=(0.5, 0.5))` ("random": independent
per-path masks, about half of each mask shared; "magnitude" gives equal masks,
which every form stores once), then `--train_steps` clean Adam steps on the
embedded digits so that biases and batch-norm statistics are not at their
initial values. Every file goes through `keras_smart.export.to_tflite`, so it
is checked against Keras at lam 0, 0.5 and 1 before it is measured.

Latency: `ai_edge_litert` interpreter, batch 1, `--threads` threads, default
XNNPACK delegate and (as a cross-check) without default delegates; the median
of `--invokes` invokes per round after a warm-up, the median over `--rounds`
rounds that interleave the files (robust to load from other processes).

The forms other than two_kernels swap the dual-mask layers' export-form call
(`ConditionalKernel._separated_call`) inside this script only: a study device,
not an export option.

Run: python benchmarks/runtime_tradeoff_size.py [--rounds 5] [--invokes 200] [--score random]
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import keras_smart  # pylint: disable=g-import-not-at-top
from keras_smart import _compat  # pylint: disable=g-import-not-at-top
from keras_smart import export  # pylint: disable=g-import-not-at-top
from keras_smart.layers import conditional_kernel  # pylint: disable=g-import-not-at-top

keras = _compat.keras
FORMS = ("two_kernels", "select", "select_layout", "shared_residual")


def _numpy_parts(layer, kernel_name):
    """(W, M_clean, M_adv) of one kernel as float32 NumPy arrays, read at trace time."""
    with tf.init_scope():
        kernel = np.asarray(getattr(layer, kernel_name).numpy(), np.float32)
        clean, adversarial = [np.asarray(m, np.float32) for m in layer.kernel_masks(kernel_name).values()]
    return kernel, clean, adversarial


def _litert_permutation(layer, ndim):
    """The axis order LiteRT's operator keeps its (constant) weights in."""
    if isinstance(layer, keras.layers.Dense):
        return (1, 0)
    if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
        return (3, 0, 1, 2)  # HWIO -> OHWI
    return tuple(range(ndim))


def _form_call(form):
    """A replacement for the dual-mask layers' export-form call that computes `form`."""

    def call(layer, inputs, lam):
        a = tf.reshape(tf.cast(layer.path_weight(lam), tf.float32), [])
        parts = [_numpy_parts(layer, name) for name in layer.kernel_names]
        if form == "two_kernels":
            paths = [[tf.constant(w * m[p]) for w, *m in parts] for p in (0, 1)]
            outputs = (1.0 - a) * layer._linear(inputs, *paths[0]) + a * layer._linear(inputs, *paths[1])
            return layer._bias_and_activation(outputs)
        if form == "shared_residual":
            shared = [tf.constant(w * mc * ma) for w, mc, ma in parts]
            clean = [tf.constant(w * mc * (1 - ma)) for w, mc, ma in parts]
            adversarial = [tf.constant(w * ma * (1 - mc)) for w, mc, ma in parts]
            outputs = layer._linear(inputs, *shared)
            outputs += (1.0 - a) * layer._linear(inputs, *clean) + a * layer._linear(inputs, *adversarial)
            return layer._bias_and_activation(outputs)
        kernels = []
        for w, mc, ma in parts:
            order = _litert_permutation(layer, w.ndim) if form == "select_layout" else tuple(range(w.ndim))
            w, mc, ma = (np.transpose(v, order) for v in (w, mc, ma))
            mask = tf.where(a > 0.5, tf.constant(ma > 0), tf.constant(mc > 0))
            if form == "select":
                kernel = tf.constant(w) * tf.cast(mask, tf.float32)
            else:
                kernel = tf.where(mask, tf.constant(w), tf.zeros((), tf.float32))
            kernels.append(tf.transpose(kernel, np.argsort(order)))
        return layer._forward(inputs, *kernels)

    return call


@contextlib.contextmanager
def _form(form):
    original = conditional_kernel.ConditionalKernel._separated_call
    conditional_kernel.ConditionalKernel._separated_call = _form_call(form)
    try:
        yield
    finally:
        conditional_kernel.ConditionalKernel._separated_call = original


def _model(args):
    keras.utils.set_random_seed(args.seed)
    smart = keras_smart.convert(keras_smart.backbones.digits_cnn(), "smart")
    keras_smart.design_masks(smart, score=args.score, density=(0.5, 0.5), seed=args.seed)
    if args.train_steps:
        x, y = keras_smart.data.digits("train")
        smart.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        smart.fit(x, y, batch_size=64, epochs=1, steps_per_epoch=args.train_steps, verbose=0)
    return smart


def _interpreter_runner(path, threads, delegates):
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top

    options = {} if delegates else {
        "experimental_op_resolver_type": litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    }
    return litert.Interpreter(model_path=path, num_threads=threads, **options).get_signature_runner("serving_default")


def _latencies(files, image, args):
    """{(file, delegates): median ms}, rounds interleaving the files."""
    runners = {}
    for name, (path, runtime) in files.items():
        feeds = {"input": image}
        if runtime:
            feeds["tradeoff"] = np.array([1.0], np.float32)
        for delegates in (True, False):
            runner = _interpreter_runner(path, args.threads, delegates)
            for _ in range(20):
                runner(**feeds)
            runners[(name, delegates)] = (runner, feeds)
    rounds = {key: [] for key in runners}
    for _ in range(args.rounds):
        for key, (runner, feeds) in runners.items():
            times = []
            for _ in range(args.invokes):
                start = time.perf_counter()
                runner(**feeds)
                times.append(time.perf_counter() - start)
            rounds[key].append(1000.0 * statistics.median(times))
    return {key: statistics.median(values) for key, values in rounds.items()}


def _export_all(smart, directory, check):
    """{name: (path, runtime?)} and {name: export summary or error}."""
    files, summaries = {}, {}
    jobs = [("baked", None, dict(tradeoff=1.0)), ("runtime_today", None, dict(runtime_tradeoff=True))]
    jobs += [(form, form, dict(runtime_tradeoff=True)) for form in FORMS]
    for name, form, options in jobs:
        path = os.path.join(directory, f"{name}.tflite")
        try:
            with _form(form) if form else contextlib.nullcontext():
                result = export.to_tflite(smart, path, check_data=check, **options)
        except Exception as error:  # pylint: disable=broad-except
            summaries[name] = {"error": f"{type(error).__name__}: {str(error)[:400]}"}
            continue
        files[name] = (path, "tradeoff" not in options)
        summaries[name] = {"bytes": result.size_bytes, "max_abs_diff": result.max_abs_diff, "ops": result.ops}
    return files, summaries


def main(args):
    smart = _model(args)
    x, _ = keras_smart.data.digits("test")
    with tempfile.TemporaryDirectory(prefix="runtime_tradeoff_") as directory:
        files, summaries = _export_all(smart, directory, x[:32])
        latency = _latencies(files, x[:1], args)
    baked = summaries.get("baked", {}).get("bytes")
    baked_ms = latency.get(("baked", True))
    today_ms = latency.get(("two_kernels", True))
    for name, summary in summaries.items():
        if "bytes" in summary:
            summary["size_over_baked"] = round(summary["bytes"] / baked, 3) if baked else None
            summary["ms_xnnpack"] = round(latency[(name, True)], 4)
            summary["ms_without_default_delegates"] = round(latency[(name, False)], 4)
            summary["xnnpack_ms_over_baked"] = round(latency[(name, True)] / baked_ms, 2) if baked_ms else None
            summary["xnnpack_ms_over_two_kernels"] = round(latency[(name, True)] / today_ms, 2) if today_ms else None
    weights = sum(
        int(np.prod(getattr(layer, name).shape)) for layer in smart.layers for name in getattr(layer, "kernel_names", ())
    )
    report = {
        "settings": {
            "model": "keras_smart.backbones.digits_cnn() -> convert('smart')",
            "masks": f"design_masks(score={args.score!r}, density=(0.5, 0.5), seed={args.seed})",
            "train_steps": args.train_steps,
            "masked_kernel_weights": weights,
            "latency": f"batch 1, {args.threads} thread(s), median of {args.invokes} invokes per round, "
            f"median of {args.rounds} interleaved rounds, lam input 1.0",
        },
        "files": summaries,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "tensorflow": tf.__version__,
            "flavour": _compat.FLAVOUR,
        },
    }
    print(json.dumps(report, indent=1))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--score", default="random", help="design_masks score (random, magnitude, ...)")
    parser.add_argument("--train_steps", type=int, default=30, help="clean Adam steps before export (0: none)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--invokes", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
