"""Adversarial-training throughput: keras_smart's once-for-all methods vs plain PGD-AT, clean training and IBM ART.

Every configuration trains the same backbone (`keras_smart.backbones`, default
`digits_cnn(width=32)`: conv32-BN-ReLU-pool, conv64-BN-ReLU-pool, dense 128,
dense 10) on the same data (`keras_smart.data.digits("train")`, 4,000 real
MNIST digits, repeated and shuffled), batch size 128, Adam, cross-entropy from
logits, with the same training attack: PGD-K L-inf (default K = 7, eps 0.3,
step 2.5 * eps / K, random start, batch-norm in inference mode while attacking).

Configurations (`--runs`):
- clean: `model.fit` on the plain backbone, no attack.
- pgd_at: plain PGD-AT on the unconverted backbone, a minimal `train_step` on a
  `keras.Model` subclass trained by `fit`: x_adv = `keras_smart.attacks.pgd`
  (BN inference mode), then (1 - lam) * CE(x) + lam * CE(x_adv) with both passes
  in training mode, at fixed lam = `--pgd_at_lam` (default 0.5, OAT's PGDAT
  loss with both a clean and an adversarial training pass, the reference of the
  1.10x targets).
- pgd_at_lam1: the same at lam = 1 (adversarial pass only: ART's recipe).
- smart, smart_blend, float, floats, oat (each with "_batch" for
  sampling="batch"): `keras_smart.convert` + `AdversarialCallback` (OAT's tradeoffs
  (0, .1, .2, .3, .4, 1), element sampling with the 1/6 clean quota unless
  "_batch"). SMART and FLOATS masks: `design_masks(score="random", density 0.5)`.
- art: IBM ART's `AdversarialTrainerMadryPGD` (PGD-AT at lam = 1, ART's own
  eager PGD) on a `TensorFlowV2Classifier` around the same backbone, with a
  `tf.function` `train_step` (without one ART defines a new `tf.function` in
  every `classifier.fit` call, i.e. once per batch, and retraces every step) and
  the attack's generation batch set to the training batch (ART's PGD default 32).
- clean_jit, pgd_at_jit, smart_jit: clean, pgd_at and smart compiled with
  `jit_compile=True` (XLA); a run the library refuses is reported under
  "failed_runs" and the others go on. The 4.5x target compares the PGD-AT step
  and the clean step each at the faster of jit_compile True / False.
- repeated_fit, first_step, weight_bytes (not interleaved; see
  benchmarks/fit_overheads.py, JSON under "overheads"): N x `fit(epochs=1)` vs
  one `fit(epochs=N)` of a SMART model (`--fit_epochs`, `--fit_rounds`; target
  <= 1.10); MobileNetV2 (96x96x3, 10 classes) first-step seconds, adversarial
  SMART `fit` vs plain `fit` (`--first_step_batch`; target <= 2.5); MobileNetV2
  SMART weight bytes over the dense model's (target <= 1.5).

Timing: the Keras configurations each run one `fit` (epochs = 1 + repeats,
`steps_per_epoch = --steps`) in a worker thread that a callback holds at each
epoch start until its turn, so that the configurations run one at a time and
interleaved: round 0 (tracing, warm-up) is discarded, then each round times
`--steps` steps of every configuration in turn (ART's blocks are
`trainer.fit` on `--steps` batches). The step time of a configuration is the
median over rounds of block time / steps. Interleaving makes the ratios robust
to load from other processes, which is recorded ("machine": load averages and
this process's CPU share per block: ~cores when the machine is otherwise idle).

Run: python benchmarks/at_throughput.py [--steps 6] [--repeats 5] [--width 32] [--runs clean,pgd_at,smart]
     python benchmarks/at_throughput.py --issue15   (the training-speed issue's set, ~10 minutes on 2 cores)
The default --runs are the step-time runs without the jit runs and the
measurements.
Prints one JSON object to stdout. Not a test.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TQDM_DISABLE", "1")  # ART's progress bars

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import keras_smart  # pylint: disable=g-import-not-at-top
from keras_smart import _compat  # pylint: disable=g-import-not-at-top
from keras_smart import attacks  # pylint: disable=g-import-not-at-top
from keras_smart import backbones  # pylint: disable=g-import-not-at-top
from keras_smart import callbacks  # pylint: disable=g-import-not-at-top

import fit_overheads  # benchmarks/fit_overheads.py: repeated fit calls, first-step time, weight bytes
import pgd_at  # benchmarks/pgd_at.py: the hand-written PGD-AT baseline

keras = _compat.keras

# name -> (convert method, convert options, sampling); None: not a keras_smart run.
SMART_RUNS = {
    "smart": ("smart", {}, "element"),
    "smart_batch": ("smart", {}, "batch"),
    "smart_blend": ("smart", {"tradeoff_mode": "blend"}, "element"),
    "smart_blend_batch": ("smart", {"tradeoff_mode": "blend"}, "batch"),
    "float": ("float", {}, "element"),
    "float_batch": ("float", {}, "batch"),
    "floats": ("floats", {}, "element"),
    "floats_batch": ("floats", {}, "batch"),
    "oat": ("oat", {}, "element"),
    "oat_batch": ("oat", {}, "batch"),
}
JIT_RUNS = ("clean_jit", "pgd_at_jit", "smart_jit")  # the same runs compiled with jit_compile=True
MEASUREMENTS = ("repeated_fit", "first_step", "weight_bytes")  # fit_overheads.py; not interleaved
RUNS = ("clean", "pgd_at", "pgd_at_lam1") + tuple(SMART_RUNS) + ("art",) + JIT_RUNS + MEASUREMENTS
# --issue15: exactly the measurements of the training-speed issue, small enough for ~10 minutes on 2 busy cores.
ISSUE15 = {
    "runs": "clean,pgd_at,smart,float,art,clean_jit,pgd_at_jit,smart_jit,repeated_fit,first_step,weight_bytes",
    "steps": 4,
    "repeats": 3,
    "fit_epochs": 3,
    "fit_rounds": 2,
}


class _Turns(keras.callbacks.Callback):
    """Holds `fit` at each epoch start until the scheduler gives it a turn; times the epoch."""

    def __init__(self):
        super().__init__()
        self.go = threading.Event()
        self.done = threading.Event()
        self.error = None
        self.start = None
        self.blocks = []  # (wall seconds, process CPU seconds) per epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.go.wait()
        self.go.clear()
        self.start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.blocks.append((time.perf_counter() - self.start[0], time.process_time() - self.start[1]))
        self.done.set()


class _FitRun:
    """One Keras configuration: a `fit` in a worker thread, advanced one epoch (block) per turn."""

    def __init__(self, name, model, dataset, steps, rounds, extra_callbacks=()):
        self.name = name
        self.turns = _Turns()
        fit_args = dict(
            x=dataset,
            epochs=rounds,
            steps_per_epoch=steps,
            verbose=0,
            callbacks=list(extra_callbacks) + [self.turns],
        )

        def target():
            try:
                model.fit(**fit_args)
            except BaseException as error:  # reported by the scheduler, in the main thread
                self.turns.error = error
                self.turns.done.set()

        self.thread = threading.Thread(target=target, name=f"fit-{name}", daemon=True)
        self.thread.start()

    def block(self):
        self.turns.go.set()
        self.turns.done.wait()
        self.turns.done.clear()
        if self.turns.error is not None:
            raise RuntimeError(f"run '{self.name}' failed") from self.turns.error
        return self.turns.blocks[-1]

    def close(self):
        self.thread.join(timeout=60)


class _ARTRun:
    """IBM ART's AdversarialTrainerMadryPGD, one `trainer.fit` over `steps` batches per block."""

    def __init__(self, model, x, y, args, attack, learning_rate):
        try:
            from art.defences.trainer import AdversarialTrainerMadryPGD  # pylint: disable=g-import-not-at-top
            from art.estimators.classification import TensorFlowV2Classifier  # pylint: disable=g-import-not-at-top
        except ImportError as error:
            raise ImportError(
                "The 'art' run needs IBM ART (pip install adversarial-robustness-toolbox); "
                "leave it out of --runs otherwise."
            ) from error

        loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        optimizer = keras.optimizers.Adam(learning_rate)

        @tf.function
        def train_step(model, images, labels):
            with tf.GradientTape() as tape:
                loss = loss_object(labels, model(images, training=True))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        classifier = TensorFlowV2Classifier(
            model,
            nb_classes=10,
            input_shape=tuple(x.shape[1:]),
            loss_object=loss_object,
            optimizer=optimizer,
            train_step=train_step,
            clip_values=(attack.clip_min, attack.clip_max),
        )
        self.trainer = AdversarialTrainerMadryPGD(
            classifier,
            nb_epochs=1,
            batch_size=args.batch_size,
            eps=attack.eps,
            eps_step=attack.step_size,
            max_iter=attack.steps,
            num_random_init=1,
        )
        self.trainer.attack.set_params(batch_size=args.batch_size)  # ART's PGD generates in batches of 32
        self.x, self.y = x, y
        self.size = args.steps * args.batch_size
        self.batch_size = args.batch_size
        self.offset = 0

    def block(self):
        index = np.arange(self.offset, self.offset + self.size) % len(self.x)
        self.offset += self.size
        x, y = self.x[index], self.y[index]
        start = (time.perf_counter(), time.process_time())
        self.trainer.fit(x, y, nb_epochs=1, batch_size=self.batch_size)
        return time.perf_counter() - start[0], time.process_time() - start[1]

    def close(self):
        pass


def _backbone(args):
    if args.backbone == "digits_cnn":
        return backbones.digits_cnn(width=args.width)
    depth = int(args.backbone[len("resnet") :])
    return backbones.resnet(depth, input_shape=(28, 28, 1), width=args.width)


def _compile(model, learning_rate, jit_compile=False):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def _dataset(x, y, batch_size, seed):
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .repeat()
        .shuffle(len(x), seed=seed)
        .batch(batch_size, drop_remainder=True)
    )


def _start(name, args, x, y, attack, rounds):
    """Builds configuration `name` and starts it (a worker thread for Keras runs)."""
    keras.utils.set_random_seed(args.seed)
    base = _backbone(args)
    if name == "art":
        return _ARTRun(base, x, y, args, attack, args.learning_rate)
    dataset = _dataset(x, y, args.batch_size, args.seed)
    jit = name.endswith("_jit")
    name = name[: -len("_jit")] if jit else name
    extra = []
    if name == "clean":
        model = _compile(base, args.learning_rate, jit)
    elif name in ("pgd_at", "pgd_at_lam1"):
        lam = 1.0 if name == "pgd_at_lam1" else args.pgd_at_lam
        model = _compile(pgd_at.PGDATModel(base.inputs, base.outputs, attack, lam), args.learning_rate, jit)
    else:
        model, callback = _smart_model(name, base, attack, args)
        model = _compile(model, args.learning_rate, jit)
        extra.append(callback)
    return _FitRun(name + ("_jit" if jit else ""), model, dataset, args.steps, rounds, extra)


def _seeded_smart(args, attack):
    keras.utils.set_random_seed(args.seed)
    return _smart_model("smart", _backbone(args), attack, args)


def _smart_model(name, base, attack, args):
    """(the converted model of SMART_RUNS[name], its AdversarialCallback)."""
    method, options, sampling = SMART_RUNS[name]
    model = keras_smart.convert(base, method, **options)
    if method in ("smart", "floats"):
        keras_smart.design_masks(model, score="random", density=(0.5, 0.5), seed=args.seed)
    return model, callbacks.AdversarialCallback(attack=attack, sampling=sampling, seed=args.seed)


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def _ratios(step, k):
    """The step-time ratios the issue's targets need (and a few more), from {run: seconds per step}."""
    ratios = {
        "smart_over_pgd_at": _ratio(step.get("smart"), step.get("pgd_at")),
        "float_over_pgd_at": _ratio(step.get("float"), step.get("pgd_at")),
    }
    for name in SMART_RUNS:
        if name not in ("smart", "float"):
            ratios[f"{name}_over_pgd_at"] = _ratio(step.get(name), step.get("pgd_at"))
    ratios.update(
        {
            "pgd_at_over_clean": _ratio(step.get("pgd_at"), step.get("clean")),
            "pgd_at_lam1_over_clean": _ratio(step.get("pgd_at_lam1"), step.get("clean")),
            "smart_over_clean": _ratio(step.get("smart"), step.get("clean")),
            "pgd_step_bound_over_clean": round(1.10 * (2 * k / 3 + 2), 3),
            "art_over_smart": _ratio(step.get("art"), step.get("smart")),
            "art_over_smart_batch": _ratio(step.get("art"), step.get("smart_batch")),
            "art_over_pgd_at_lam1": _ratio(step.get("art"), step.get("pgd_at_lam1")),
        }
    )
    for name in ("clean", "pgd_at", "smart"):
        ratios[f"{name}_jit_over_{name}"] = _ratio(step.get(f"{name}_jit"), step.get(name))
    ratios["pgd_at_jit_over_clean_jit"] = _ratio(step.get("pgd_at_jit"), step.get("clean_jit"))
    ratios["smart_jit_over_clean_jit"] = _ratio(step.get("smart_jit"), step.get("clean_jit"))
    # Each step at the faster of jit_compile=True / False (whichever runs were measured).
    fastest = {
        name: min((step[n] for n in (name, f"{name}_jit") if step.get(n)), default=None)
        for name in ("clean", "pgd_at", "smart")
    }
    ratios["pgd_at_fastest_over_clean_fastest"] = _ratio(fastest["pgd_at"], fastest["clean"])
    ratios["smart_fastest_over_clean_fastest"] = _ratio(fastest["smart"], fastest["clean"])
    return ratios


def _report(args, attack, blocks, warmups, load, wall):
    steps, batch = args.steps, args.batch_size
    runs = {}
    for name, timed in blocks.items():
        per_step = [w / steps for w, _ in timed]
        median = statistics.median(per_step)
        runs[name] = {
            "seconds_per_step": round(median, 5),
            "images_per_second": round(batch / median, 1),
            "seconds_per_step_all_repeats": [round(s, 5) for s in per_step],
            "cpu_seconds_per_step": round(statistics.median(c / steps for _, c in timed), 5),
            "process_cpu_share": round(statistics.median(c / w for w, c in timed), 2),
            "warmup_block_seconds": round(warmups[name], 1),
        }
    k = attack.steps
    bound = 1.10 * (2 * k / 3 + 2)
    ratios = _ratios({name: r["seconds_per_step"] for name, r in runs.items()}, k)
    cpu_ratios = _ratios({name: r["cpu_seconds_per_step"] for name, r in runs.items()}, k)
    targets = {}

    def target(key, value, ok):
        if value is not None:
            targets[key] = {"value": value, "pass": bool(ok(value))}

    target("smart_step_within_1.10x_pgd_at", ratios["smart_over_pgd_at"], lambda v: v <= 1.10)
    target("float_step_within_1.10x_pgd_at", ratios["float_over_pgd_at"], lambda v: v <= 1.10)
    target(
        f"pgd{k}_step_within_{bound:.2f}x_clean (1.10*(2K/3+2))",
        ratios["pgd_at_over_clean"],
        lambda v: v <= bound,
    )
    target("smart_at_least_3.5x_faster_than_art", ratios["art_over_smart"], lambda v: v >= 3.5)
    if "clean_jit" in runs or "pgd_at_jit" in runs:
        target(
            f"pgd{k}_step_within_4.5x_clean (each at the faster of jit_compile True / False)",
            ratios["pgd_at_fastest_over_clean_fastest"],
            lambda v: v <= 4.5,
        )
    info = {
        "smart_batch_within_1.10x_pgd_at": ratios.get("smart_batch_over_pgd_at"),
        "float_batch_within_1.10x_pgd_at": ratios.get("float_batch_over_pgd_at"),
    }
    for key, value in info.items():
        target(key + " (informative)", value, lambda v: v <= 1.10)

    keras_version = getattr(keras, "__version__", None) or getattr(keras, "version", lambda: None)()
    try:
        import art  # pylint: disable=g-import-not-at-top

        art_version = art.__version__
    except ImportError:  # pragma: no cover
        art_version = None
    return {
        "settings": {
            "backbone": f"keras_smart.backbones.{args.backbone}(width={args.width})",
            "data": "keras_smart.data.digits('train'): 4,000 MNIST digits, repeated, shuffled",
            "batch_size": batch,
            "steps_per_block": steps,
            "timed_blocks": args.repeats,
            "warmup_blocks": 1,
            "optimizer": f"Adam({args.learning_rate})",
            "attack": f"PGD-{k} L-inf eps {attack.eps} step {attack.step_size:.5f} random start, BN inference",
            "pgd_at_lam": args.pgd_at_lam,
            "tradeoffs": list(keras_smart.config.OAT_TRADEOFFS),
            "clean_share": "1/6 (element sampling)",
            "masks": "design_masks(score='random', density=(0.5, 0.5)) for smart and floats",
            "jit": "runs named *_jit compile with jit_compile=True (XLA), the others with jit_compile=False",
            "art": "AdversarialTrainerMadryPGD(ratio 1 = lam 1), TensorFlowV2Classifier with a tf.function "
            "train_step, attack batch_size = batch_size",
            "timing": "interleaved rounds, round 0 (tracing) discarded; median over rounds of block wall "
            "seconds / steps; targets use wall time; ratios_by_process_cpu_time (this process's CPU seconds, "
            "all threads) are a cross-check less sensitive to other processes' load",
        },
        "runs": runs,
        "ratios": ratios,
        "ratios_by_process_cpu_time": cpu_ratios,
        "targets": targets,
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras_version,
            "flavour": _compat.FLAVOUR,
            "art": art_version,
            "tf_threads": args.threads or "default",
            "load_average_start": load[0],
            "load_average_end": load[1],
            "wall_seconds": round(wall, 1),
        },
    }


def main(args):
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    t0 = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]
    x, y = keras_smart.data.digits("train")
    attack = keras_smart.AttackConfig(
        eps=args.eps, steps=args.attack_steps, step_size=args.step_size or None
    )
    blocks, warmups, failed = _interleaved(args, x, y, attack)
    overheads = fit_overheads.measure(
        [n for n in args.runs if n in MEASUREMENTS],
        args,
        attack,
        compile_model=lambda model: _compile(model, args.learning_rate),
        smart_digits=lambda: _seeded_smart(args, attack),
        dataset=lambda: _dataset(x, y, args.batch_size, args.seed),
    )
    load_end = [round(v, 2) for v in os.getloadavg()]
    report = _report(args, attack, blocks, warmups, (load_start, load_end), time.perf_counter() - t0)
    if failed:
        report["failed_runs"] = failed
    if overheads:
        report["overheads"] = overheads
        fit_overheads.add_targets(overheads, report["targets"])
    print(json.dumps(report, indent=1))


def _interleaved(args, x, y, attack):
    """({run: [(wall, cpu) per timed block]}, {run: warm-up seconds}, {run: error}) of the step-time runs.

    A run that fails (e.g. a combination the library refuses) is reported and
    left out; the others go on.
    """
    rounds = 1 + args.repeats
    started, failed = {}, {}
    blocks, warmups = {}, {}
    try:
        for name in (n for n in args.runs if n not in MEASUREMENTS):
            try:
                started[name] = _start(name, args, x, y, attack, rounds)
            except Exception as error:  # pylint: disable=broad-except
                failed[name] = f"{type(error).__name__}: {error}"
        blocks = {name: [] for name in started}
        for r in range(rounds):
            for name, run in list(started.items()):
                try:
                    timing = run.block()
                except RuntimeError as error:
                    cause = error.__cause__ or error
                    failed[name] = f"{type(cause).__name__}: {str(cause)[:500]}"
                    run.close()
                    del started[name], blocks[name]
                    continue
                if r:
                    blocks[name].append(timing)
                else:
                    warmups[name] = timing[0]
                if args.verbose:
                    print(f"round {r} {name}: {timing[0] / args.steps:.4f} s/step", file=sys.stderr, flush=True)
    finally:
        for run in started.values():
            run.close()
    return blocks, warmups, failed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_runs = [r for r in RUNS if r not in JIT_RUNS + MEASUREMENTS]
    parser.add_argument("--runs", default=",".join(default_runs), help="comma-separated, from: " + ",".join(RUNS))
    parser.add_argument("--backbone", default="digits_cnn", help="digits_cnn or resnet<6n+2> (e.g. resnet8)")
    parser.add_argument("--width", type=int, default=32, help="digits_cnn: first conv's filters; resnet: stage 1's")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="training steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks (rounds) per configuration")
    parser.add_argument("--attack_steps", type=int, default=7, help="K of the PGD-K training attack")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--step_size", type=float, default=0.0, help="0: 2.5 * eps / K")
    parser.add_argument("--pgd_at_lam", type=float, default=0.5, help="lam of the pgd_at reference, in (0, 1]")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0,
        help="TF intra- and inter-op threads (0: TF's default); 1 makes the CPU-time ratios robust to load",
    )
    parser.add_argument("--fit_epochs", type=int, default=3, help="repeated_fit: N fit(epochs=1) vs fit(epochs=N)")
    parser.add_argument("--fit_rounds", type=int, default=3, help="repeated_fit: timed rounds after a warm-up")
    parser.add_argument("--first_step_batch", type=int, default=8, help="first_step: MobileNetV2 batch size")
    parser.add_argument(
        "--issue15", action="store_true",
        help=f"the training-speed issue's measurements: defaults {ISSUE15} (explicit flags still win)",
    )
    parser.add_argument("--verbose", action="store_true", help="per-block times on stderr")
    if "--issue15" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**ISSUE15)
    args = parser.parse_args(argv)
    args.runs = [r for r in args.runs.split(",") if r]
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown or not args.runs:
        parser.error(f"--runs must name some of {list(RUNS)}. Received unknown: {unknown}")
    if args.backbone != "digits_cnn" and not (
        args.backbone.startswith("resnet") and args.backbone[6:].isdigit()
    ):
        parser.error(f"--backbone must be digits_cnn or resnet<depth>. Received: {args.backbone!r}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0. Received: {args.threads}")
    for flag in ("steps", "repeats", "attack_steps", "batch_size", "width", "fit_epochs", "fit_rounds", "first_step_batch"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1. Received: {getattr(args, flag)}")
    if not 0.0 < args.pgd_at_lam <= 1.0:
        parser.error(f"--pgd_at_lam must be in (0, 1]. Received: {args.pgd_at_lam}")
    return args


if __name__ == "__main__":
    main(parse_args())
