"""export_size_latency.py --model mobilenetv2: LiteRT size, executed MACs and interleaved latency of MobileNetV2-224 files.

Not run on its own: `python benchmarks/export_size_latency.py --model mobilenetv2`
(see that file's docstring for what is measured and the targets).
"""

import gzip
import json
import os
import platform
import random
import statistics
import tempfile
import time

import numpy as np

import keras_smart
from keras_smart import _compat
from keras_smart import export

keras = _compat.keras

SIZE = 224
CLASSES = 1000
DENSITY = (0.5, 0.3)  # (clean, adversarial) share of kernel weights kept
CALIBRATION = 32  # random uniform images in [-1, 1): int8 calibration
CHECKS = 16  # other random images: the export's parity check
THREADS = (1, 2)
PRECISIONS = ("float", "dynamic", "int8")
MODEL_NOTE = (
    f"keras.applications.MobileNetV2(input_shape=({SIZE}, {SIZE}, 3), alpha=1.0, weights=None, "
    f"classes={CLASSES}, classifier_activation=None): untrained Keras initial weights, logits out"
)

BATCH_NORM_NOTE = (
    f"dense: moving statistics of a training-mode pass over the {CALIBRATION} calibration images (Keras's "
    "initial ones shrink an untrained MobileNetV2's logits to ~1e-17); SMART: recalibrate_batchnorm per path "
    "after the masks, on the same images (adversarial path: one FGSM step of 2/255)"
)


def _images(rng, count):
    return rng.uniform(-1.0, 1.0, (count, SIZE, SIZE, 3)).astype(np.float32)


def _set_statistics(dense, images):
    """Sets every batch-norm's moving statistics to those of a training-mode pass over `images`.

    Keras's initial statistics (mean 0, variance 1) shrink the activations of
    an untrained MobileNetV2 layer by layer (logits ~1e-17): the parity check
    then compares nothing and int8 calibrates on zeros. With the statistics of
    the inputs the model serves, every layer sees values of order one, as in a
    trained model.
    """
    layers = [l for l in dense.layers if isinstance(l, keras.layers.BatchNormalization)]
    momentum = [l.momentum for l in layers]
    for layer in layers:
        layer.momentum = 0.0
    dense(images, training=True)
    for layer, value in zip(layers, momentum):
        layer.momentum = value


def _models(images):
    """(dense Keras model, SMART with unstructured masks, SMART with channel-structured masks).

    The SMART models' batch-norm statistics are recomputed per path after the
    masks are set (`recalibrate_batchnorm`, as `fit` does at its end), on the
    same images; the adversarial path's from one FGSM step of 2/255.
    """
    keras.utils.set_random_seed(0)
    dense = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=1.0, weights=None, classes=CLASSES, classifier_activation=None
    )
    _set_statistics(dense, images)
    labels = np.zeros(len(images), np.int64)
    attack = keras_smart.AttackConfig(kind="fgsm", eps=2 / 255, clip_min=-1.0, clip_max=1.0)
    smart = []
    for granularity in ("weight", "channel"):
        model = keras_smart.convert(dense, "smart")
        options = {"granularity": "channel"} if granularity == "channel" else {}
        keras_smart.design_masks(model, score="magnitude", density=DENSITY, **options)
        keras_smart.recalibrate_batchnorm(model, (images, labels), attack=attack, batch_size=16)
        smart.append(model)
    return (dense, *smart)


def _macs(plain):
    """Executed MACs (every kernel weight of the plain model) and non-zero MACs, and its parameter count."""
    counts = keras_smart.count_nonzero(plain)
    return {"macs_executed": counts.macs_dense, "macs_nonzero": counts.macs_clean, "params": int(plain.count_params())}


def _variants(dense, unstructured, channel, calibration):
    """name -> (model, to_tflite options, row facts: MACs, parameters, what the file is)."""
    quantized = {
        "float": {},
        "dynamic": {"quantize": "dynamic", "min_agreement": 0.0},
        "int8": {"quantize": "int8", "representative_data": calibration, "min_agreement": 0.0},
    }
    plain = {
        "dense": (dense, {}, _macs(dense)),
        "smart_clean": (unstructured, {"tradeoff": 0.0}, _macs(keras_smart.strip(unstructured, tradeoff=0.0))),
        "smart_adv": (unstructured, {"tradeoff": 1.0}, _macs(keras_smart.strip(unstructured, tradeoff=1.0))),
        "channel_clean": (
            channel, {"tradeoff": 0.0, "compact": True}, _macs(keras_smart.strip(channel, tradeoff=0.0, compact=True))
        ),
        "channel_adv": (
            channel, {"tradeoff": 1.0, "compact": True}, _macs(keras_smart.strip(channel, tradeoff=1.0, compact=True))
        ),
    }
    variants = {}
    for base, (model, options, facts) in plain.items():
        for precision in PRECISIONS:
            variants[f"{base}_{precision}"] = (model, {**options, **quantized[precision]}, facts)
    runtime = {
        **_macs(keras_smart.strip(unstructured, tradeoff=0.0)),
        "macs_executed": _macs(dense)["macs_executed"],
        "tradeoff_input": 0.0,
    }
    for precision in PRECISIONS:
        variants[f"smart_runtime_{precision}"] = (
            unstructured, {"runtime_tradeoff": True, "check_tradeoffs": (0.0, 1.0), **quantized[precision]}, runtime
        )
    return variants


def _export(variants, directory, checks):
    rows = {}
    for name, (model, options, facts) in variants.items():
        path = os.path.join(directory, name + ".tflite")
        started = time.perf_counter()
        result = export.to_tflite(model, path, check_data=checks, **options)
        with open(path, "rb") as f:
            raw = f.read()
        rows[name] = {
            "size_bytes": len(raw),
            "gzip_bytes": len(gzip.compress(raw, 9)),
            **facts,
            "check_max_abs_diff": result.max_abs_diff,
            "check_top1_agreement": result.agreement,
            "export_seconds": round(time.perf_counter() - started, 1),
        }
        print(f"exported {name}: {len(raw)} bytes, max abs diff {result.max_abs_diff}", flush=True)
    return rows


def _runner(path, threads, tradeoff):
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top

    interpreter = litert.Interpreter(model_path=path, num_threads=threads)
    runner = interpreter.get_signature_runner("serving_default")
    details = runner.get_input_details()
    feeds = {"input": np.random.default_rng(0).random((1, SIZE, SIZE, 3)).astype(details["input"]["dtype"])}
    if tradeoff is not None:
        feeds["tradeoff"] = np.array([tradeoff], np.float32)
    for _ in range(3):
        runner(**feeds)
    return interpreter, runner, feeds


def _time_pass(directory, rows, rounds, runs):
    """One timing pass: every (file, threads) `runs` invokes per round, in a shuffled order each round."""
    load_before = os.getloadavg()
    started = time.perf_counter()
    runners = {
        (name, threads): _runner(os.path.join(directory, name + ".tflite"), threads, row.get("tradeoff_input"))
        for name, row in rows.items()
        for threads in THREADS
    }
    times = {key: [] for key in runners}
    order = list(runners)
    shuffle = random.Random(0)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for key in order:
            _, runner, feeds = runners[key]
            runner(**feeds)  # one untimed invoke: caches after the previous file
            for _ in range(runs):
                start = time.perf_counter()
                runner(**feeds)
                times[key].append(time.perf_counter() - start)
    medians = {name: {} for name in rows}
    p10 = {name: {} for name in rows}  # the 10th percentile: what the file takes when no one else runs
    for (name, threads), values in times.items():
        key = f"latency_ms_{threads}_thread{'s' if threads > 1 else ''}"
        medians[name][key] = round(1000.0 * statistics.median(values), 3)
        p10[name][key] = round(1000.0 * float(np.percentile(values, 10)), 3)
    load_after = os.getloadavg()
    return {
        "rounds": rounds,
        "runs_per_round": runs,
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in load_after],
        "seconds": round(time.perf_counter() - started, 1),
        "medians": medians,
        "p10": p10,
    }


def _ratio(rows, a, b, key):
    return round(rows[a][key] / rows[b][key], 4)


def _targets(rows):
    targets = {}
    for precision in PRECISIONS:
        for key in ("latency_ms_1_thread", "latency_ms_2_threads"):
            targets[f"channel_clean_vs_dense_{precision}_{key[11:]}"] = {
                "value": _ratio(rows, f"channel_clean_{precision}", f"dense_{precision}", key), "target": "<= 0.6"
            }
    for key in ("latency_ms_1_thread",):
        targets["int8_vs_float_dense_1_thread"] = {"value": _ratio(rows, "dense_int8", "dense_float", key),
                                                   "target": "<= 0.25"}
    for entry in targets.values():
        entry["met"] = entry["value"] <= float(entry["target"].split()[-1])
    return targets


def _ratios(rows):
    """Latency and MACs ratios worth reading beside the targets (no targets of their own)."""
    out = {}
    for key in ("latency_ms_1_thread", "latency_ms_2_threads"):
        for precision in PRECISIONS:
            for name in ("smart_clean", "smart_adv", "channel_clean", "channel_adv", "smart_runtime"):
                out[f"{name}_vs_dense_{precision}_{key[11:]}"] = _ratio(rows, f"{name}_{precision}", f"dense_{precision}", key)
            out[f"runtime_vs_baked_{precision}_{key[11:]}"] = _ratio(
                rows, f"smart_runtime_{precision}", f"smart_clean_{precision}", key)
        for name in ("dense", "channel_clean", "channel_adv"):
            for precision in ("dynamic", "int8"):
                out[f"{name}_{precision}_vs_float_{key[11:]}"] = _ratio(rows, f"{name}_{precision}", f"{name}_float", key)
    for name in ("channel_clean_float", "channel_adv_float"):
        out[f"{name}_macs_executed_vs_dense"] = _ratio(rows, name, "dense_float", "macs_executed")
    return out


def _finish(report, args, directory):
    """Fills each row's latency from the timing pass at the lowest load, then the targets; writes the report."""
    passes = report["timing_passes"]
    chosen = min(range(len(passes)), key=lambda i: passes[i]["load_avg_before"][0] + passes[i]["load_avg_after"][0])
    report["chosen_pass"] = chosen
    for name, row in report["files"].items():
        row.update(passes[chosen]["medians"][name])
    report["targets"] = _targets(report["files"])
    report["ratios"] = _ratios(report["files"])
    text = json.dumps(report, indent=2)
    print(text)
    with open(os.path.join(directory, "report.json"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def run(args):
    """Exports and times the MobileNetV2-224 files (or, with --retime DIR, times DIR's files again)."""
    if args.retime:
        with open(os.path.join(args.retime, "report.json"), encoding="utf-8") as f:
            report = json.load(f)
        report["timing_passes"].append(_time_pass(args.retime, report["files"], args.rounds, args.runs))
        _finish(report, args, args.retime)
        return
    directory = args.keep_dir or tempfile.mkdtemp(prefix="mobilenetv2_files_")
    os.makedirs(directory, exist_ok=True)
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    calibration, checks = _images(rng, CALIBRATION), _images(rng, CHECKS)
    models = _models(calibration)
    variants = _variants(*models, calibration)
    build_seconds = time.perf_counter() - started
    rows = _export(variants, directory, checks)
    export_seconds = time.perf_counter() - started - build_seconds
    counts = keras_smart.count_nonzero(models[2])
    report = {
        "benchmark": "export_size_latency",
        "mode": "mobilenetv2",
        "keras_flavour": _compat.FLAVOUR,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "model": {
            "network": MODEL_NOTE,
            "smart_density": list(DENSITY),
            "masks": "magnitude scores of the initial weights; unstructured: layer allocation; channel: "
                     "granularity='channel' (whole output channels per path), then to_tflite(compact=True)",
            "channel_smart_nonzero": {"total": counts.total, "clean": counts.clean, "adv": counts.adv},
            "batch_norm": BATCH_NORM_NOTE,
        },
        "accuracy": "not measured: untrained weights (weights=None, no data set of ImageNet here)",
        "check": f"float files: max abs diff <= 1e-4 (scaled by the logits) on {CHECKS} uniform [-1, 1) images; "
                 f"dynamic and int8: min_agreement=0 (untrained logits are near-ties), agreement recorded; "
                 f"int8 calibrated on {CALIBRATION} other uniform [-1, 1) images",
        "latency": "median (and, per pass, 10th percentile) per file and thread count over rounds x runs_per_round invokes at batch 1, default "
                   "XNNPACK delegate, files interleaved in a shuffled order per round, one untimed invoke before "
                   "each file's runs; runtime-trade-off files fed tradeoff 0",
        "seconds": {"build_and_strip": round(build_seconds, 1), "export": round(export_seconds, 1)},
        "files": rows,
        "timing_passes": [],
    }
    report["timing_passes"].append(_time_pass(directory, rows, args.rounds, args.runs))
    report["seconds"]["total"] = round(time.perf_counter() - started, 1)
    _finish(report, args, directory)
