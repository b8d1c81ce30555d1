"""evaluate_tradeoff: check the settings, read the data, sweep the trade-offs, and report.

The flow: `plan.make_plan` checks every setting before any work; the data is
read into memory (`inputs.to_arrays`) and checked against the model; a
`sweep.Sweep` runs the attack suite at each trade-off (`rows.measure_row`);
the settings, rows and gradient-masking findings become a `TradeoffReport`.
"""

import dataclasses
import time
import warnings

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import inputs
from keras_smart import labels as labels_lib
from keras_smart import masks
from keras_smart import registry
from keras_smart import validation
from keras_smart.evaluation import exits as exit_eval
from keras_smart.evaluation import fingerprint as fingerprint_lib
from keras_smart.evaluation import forward as forward_lib
from keras_smart.evaluation import masking
from keras_smart.evaluation import plan as plan_lib
from keras_smart.evaluation import progress as progress_lib
from keras_smart.evaluation import report as report_lib
from keras_smart.evaluation import rows as rows_lib
from keras_smart.evaluation import suite
from keras_smart.evaluation import sweep as sweep_lib


def evaluate_tradeoff(
    model,
    data,
    *,
    tradeoffs=None,
    attacks=None,
    eps,
    norm="linf",
    max_examples=None,
    batch_size=256,
    seed=0,
    eot_samples=None,
    noise="sample",
    attack_options=None,
    input_range=(0.0, 1.0),
    progress=True,
    policy=None,
    lambdas=validation.UNSET,
):
    """Clean and attacked accuracy at each trade-off, the per-example worst case, cost, masking checks.

    For each lam the model computes through the path lam selects (batch-norm in
    inference mode, as deployed) and every attack runs through that same path.
    An example counts as robust to an attack only if it is classified correctly
    both clean and on the attack's output (the attacker may submit the clean
    input itself), so no attack reports more than clean accuracy and
    "worst_case" (per example, over all attacks listed) is never above any of
    them. "autoattack" is AutoAttack's standard suite: APGD-CE (in-graph), then
    targeted APGD-DLR (in-graph, 9 target classes) on what survives, then Square
    (5,000 queries; in-graph for L-inf, IBM ART for L2) on what survives; its accuracy is the per-example
    worst case over the three.

    Four gradient-masking checks per row add sentences to `report.warnings`
    (and raise a `GradientMaskingWarning`): a stronger attack reporting a higher
    accuracy than a weaker one (by more than 1 point); Square breaking more than
    5% of the examples every gradient attack left robust; PGD-20 at a budget that
    can turn every input into one image (L-inf: half the input range; L2: that
    times sqrt(dimension)) not bringing accuracy within 10 points of chance; a
    listed "pgd<K>" more than 10 points above "autoattack" (when listed, else
    above the row's worst case): PGD at those settings is too weak to judge
    the model.

    Randomised models (float, floats, SMART's noise mode at lam > 0; models
    with NoiseInjection layers, `keras_smart.noise`, at every trade-off) draw
    fresh noise on every forward pass. `noise="sample"` evaluates them as trained: the
    noise, like the attacks' random draws, is seeded by `seed` inside the
    evaluation's own compiled functions (the whole evaluation reproduces, and
    TensorFlow's and NumPy's global random state are left as they were), and
    with `eot_samples` = k > 1 every attack gradient (and Square's loss) is the
    mean over k draws (expectation over transformation); k = 1 is a fixed
    seed without EOT. `noise="expected"` evaluates the deterministic model with
    noise at its mean (what export computes; `strip` folds weight noise so).

    A multi-exit model (`keras_smart.exits.attach`) is evaluated under its exit
    `policy`: every prediction, clean or attacked, is the class of the exit the
    policy picks. Each listed "fgsm" / "pgd<K>" is a family of attacks at that
    strength, each judged by the policy: the RDI-Nets attacks that ignore it
    ("exit1".."exitN": PGD on one exit; "average"; "max_average") and adaptive
    ones that follow it ("adaptive_follow": the exit the policy picks at every
    step; "adaptive_cosine", for "pgd<K>": the same with cosine steps from
    2 * eps; "adaptive_to_exit<k>": steered to leave at side exit k and be
    wrong there); Square runs on the routed logits ("adaptive_square"). "adaptive"
    is the per-example worst case over the adaptive columns, "<family>" over
    a family's columns (each column: over every listed family). The rows also
    hold "exit_shares", "exit_macs", "macs" (expected MACs per example under
    the policy) and "expected_macs" (that as a share of `policy.macs[-1]`).
    APGD and AutoAttack attack one output and are refused for such a model.

    Args:
      model: a SmartModel, or a plain Keras classifier (one input, logits out;
        evaluated once, as one row with "tradeoff": None); either may be a
        multi-exit model (then pass `policy`).
      data: a `tf.data.Dataset` of (x, y) batches (or single examples), or an
        (x, y) tuple of arrays. Labels: integer ids or one-hot rows. Inputs must
        lie in `input_range`. The (first `max_examples`) examples are held in memory.
      tradeoffs: trade-offs to evaluate (each in [0, 1]); None:
        `config.EVALUATION_TRADEOFFS` (0, 0.2, ..., 1) for a SmartModel, one row
        for a plain model (for which any other value is an error).
      attacks: names from "fgsm", "pgd<K>" (K steps, step 2.5*eps/K, random
        start), "apgd-ce", "apgd-dlr" (targeted APGD-DLR), "square", "autoattack";
        None: ("fgsm", "pgd20", "autoattack"). A multi-exit model takes
        "fgsm", "pgd<K>" and "square" (None: ("fgsm", "pgd20"); Square always runs).
      eps: the perturbation budget (> 0), in input units; below the width of
        `input_range` (L-inf) or sqrt(d) times it (L2).
      norm: "linf" or "l2".
      max_examples: evaluate only the first this many examples (None: all).
      batch_size: examples per attack batch.
      seed: seed of the random starts, Square's draws and the weight noise of a
        randomised model (TensorFlow's global seed is not touched).
      eot_samples: None (`DEFAULT_EOT_SAMPLES` = 4 for randomised rows, 1
        otherwise) or an int >= 1 (1: a fixed seed without EOT).
      noise: "sample" or "expected" (see above).
      attack_options: overrides of `DEFAULT_ATTACK_OPTIONS`, e.g.
        {"apgd-ce": {"steps": 50}, "square": {"queries": 1000}}; they also apply
        inside "autoattack".
      input_range: (min, max) of valid inputs; adversarial inputs are clipped to it.
      progress: show a progress bar (tqdm; a log line per step without it).
      policy: the `keras_smart.exits.ExitPolicy` of a multi-exit `model`
        (from `keras_smart.exits.calibrate` on held-out data); required for
        one, refused for a single-exit model.
      lambdas: the old name of `tradeoffs` (deprecated: DeprecationWarning).

    Returns:
      A `TradeoffReport`, with `settings["model_fingerprint"]` =
      `model_fingerprint(model)` (what `keras_smart.export.bundle` checks);
      for a multi-exit model `settings["exit_policy"]` is the policy's record.
      The model's trade-off is what it was before the call (also when the
      evaluation fails).

    Raises:
      TypeError / ValueError: before any attack runs, for a model that is not a
        one-input, one-output Keras model; tradeoffs outside [0, 1] (or any for a
        plain model); an unknown attack name (the message lists the valid
        ones); eps <= 0, or eps that reaches every input (L-inf: eps >=
        max - min of `input_range`; L2: eps >= sqrt(d) * (max - min), d the
        values per example; see `keras_smart.config.check_eps`); empty data;
        inputs outside `input_range`; labels that do not match the model's
        classes; bad options; a multi-exit model without `policy`, a policy for
        another model or for a single-exit one, APGD / AutoAttack for a
        multi-exit model.
      ImportError: "square" or "autoattack" with norm="l2" without IBM ART
        (`pip install keras_smart[eval]`).

    Example:
      >>> import warnings
      >>> with warnings.catch_warnings(record=True):  # an untrained model: the masking checks may fire
      ...     report = keras_smart.evaluate_tradeoff(
      ...         smart, (x, y), tradeoffs=(1.0,), attacks=("fgsm",), eps=0.1, max_examples=16, progress=False)
      >>> list(report.rows[0]), report.settings["tradeoffs"], report.settings["examples"]
      (['tradeoff', 'clean', 'fgsm', 'worst_case', 'nonzero', 'macs'], [1.0], 16)
      >>> row = report.rows[0]
      >>> row["worst_case"] <= row["fgsm"] <= row["clean"]
      True
    """
    started = time.time()
    tradeoffs = validation.renamed_argument("evaluate_tradeoff", "lambdas", lambdas, "tradeoffs", tradeoffs)
    plan = plan_lib.make_plan(
        model, tradeoffs=tradeoffs, attacks=attacks, eps=eps, norm=norm, max_examples=max_examples,
        batch_size=batch_size, seed=seed, eot_samples=eot_samples, noise=noise, attack_options=attack_options,
        input_range=input_range, policy=policy,
    )
    examples = _read_examples(model, data, plan)
    fingerprint = fingerprint_lib.model_fingerprint(model)  # the trade-off is not in it: the sweep moves it
    counts = masks.count_nonzero(model)
    shared = dict(
        eps=plan.eps, norm=plan.norm, clip=plan.clip, batch_size=plan.batch_size, seed=plan.seed,
        options=plan.options, expected_noise=plan.noise == "expected",
    )
    if plan.policy is None:
        sweep = sweep_lib.Sweep(model, examples.x, examples.labels, **shared)
    else:
        sweep = exit_eval.ExitSweep(model, examples.x, examples.labels, policy=plan.policy, **shared)
    measured = _measure_rows(model, sweep, plan, counts, examples.chance, progress)
    settings = _settings(model, plan, examples, sweep, measured, fingerprint, counts)
    settings["seconds"] = round(time.time() - started, 1)
    findings = examples.warnings + [sentence for row in measured for sentence in row.findings]
    for sentence in findings:
        warnings.warn(sentence, masking.GradientMaskingWarning, stacklevel=2)
    return report_lib.TradeoffReport(
        settings=settings, rows=tuple(row.values for row in measured), warnings=tuple(findings)
    )


@dataclasses.dataclass(frozen=True)
class _Examples:
    """The evaluation's examples in memory: inputs, class ids, the class count, chance, early warnings."""

    x: np.ndarray
    labels: np.ndarray
    classes: int
    chance: float
    warnings: list


def _read_examples(model, data, plan):
    """The (first `max_examples`) examples, checked against the plan and the model before any attack runs."""
    x, y = inputs.to_arrays(data, max_examples=plan.max_examples, input_shape=forward_lib.declared_input_shape(model))
    plan_lib.check_budget(plan.eps, plan.norm, plan.clip, x.shape)  # L2: d is known now
    labels_lib.class_ids(y)  # malformed labels fail before any forward pass
    lo, hi = plan.clip
    if x.min() < lo - 1e-6 or x.max() > hi + 1e-6:
        raise ValueError(
            f"Inputs must lie in input_range={(lo, hi)} (attacks clip to it); `data` spans "
            f"[{x.min():g}, {x.max():g}]. Scale the inputs (normalise inside the model) or pass input_range."
        )
    if "square" in plan.components and x.ndim != 4:
        if plan.policy is not None:
            raise ValueError(
                f"A multi-exit evaluation always runs the Square attack (part of 'adaptive'), which perturbs images "
                f"[N, height, width, channels]; the inputs have shape {x.shape}."
            )
        raise ValueError(
            f"The Square attack (also part of 'autoattack') perturbs images [N, height, width, channels]; the "
            f"inputs have shape {x.shape}. Leave out 'square' and 'autoattack' for non-image inputs."
        )
    logits = forward_lib.Forward(model, expected_noise=True)(tf.constant(x[: min(len(x), 8)]))
    if isinstance(logits, list):  # a multi-exit model: every exit has the final output's classes
        logits = logits[-1]
    if logits.shape.rank != 2:
        raise ValueError(f"The model must output logits [batch, classes]; it outputs shape {logits.shape}.")
    classes = int(logits.shape[-1])
    labels = labels_lib.class_ids(y, classes)
    if "apgd-dlr" in plan.components and classes < 4:
        raise ValueError(
            f"Targeted APGD-DLR (also part of 'autoattack') needs at least 4 classes; the model has {classes}. "
            "Use attacks such as ('fgsm', 'pgd20', 'apgd-ce', 'square')."
        )
    chance = float(np.bincount(labels, minlength=classes).max() / len(labels))
    return _Examples(x=x, labels=labels, classes=classes, chance=chance, warnings=_output_warnings(logits.numpy()))


def _output_warnings(logits):
    """A warning when the model's outputs look like probabilities rather than logits."""
    if np.all(logits >= 0) and np.all(logits <= 1) and np.allclose(logits.sum(-1), 1.0, atol=1e-3):
        return [
            "The model's outputs look like probabilities (in [0, 1], rows summing to 1): the attacks expect "
            "logits, and a softmax output saturates their gradients. Evaluate the model without its softmax."
        ]
    return []


def _measure_rows(model, sweep, plan, counts, chance, progress):
    """A `rows.Row` per trade-off; the model's trade-off is restored afterwards (also on failure)."""
    bar = progress_lib.Progress(len(plan.tradeoffs) * plan.steps_per_row, progress)
    measure_row = rows_lib.measure_row if plan.policy is None else exit_eval.measure_row
    previous = float(model.tradeoff_variable.numpy()) if plan.smart else None
    try:
        measured = []
        for index, tradeoff in enumerate(plan.tradeoffs):
            if plan.smart:
                model.tradeoff_variable.assign(tradeoff)
            measured.append(measure_row(sweep, plan, tradeoff, index, counts, chance, bar))
        return measured
    finally:
        bar.close()
        if plan.smart:
            model.tradeoff_variable.assign(previous)


# --- the report's settings -------------------------------------------------------------------------


def _settings(model, plan, examples, sweep, measured, fingerprint, counts):
    """The report's settings: the threat model, every attack's settings and cost, randomness, what counts mean."""
    eot = plan.eot_for(1.0)
    settings = {
        "model": model.name,
        "model_fingerprint": fingerprint,
        "method": _method_name(model, plan.smart),
        "keras": _compat.FLAVOUR,
        "examples": int(len(examples.x)),
        "classes": examples.classes,
        "chance": examples.chance,
        "eps": plan.eps,
        "norm": plan.norm.value,
        "input_range": list(plan.clip),
        "batch_norm": "inference",
        "tradeoffs": list(plan.tradeoffs) if plan.smart else None,
        "attack_names": list(plan.names),
        "attacks": {
            name: suite.attack_settings(name, plan.eps, plan.norm, plan.options, eot, examples.classes)
            for name in plan.names
        },
        "robust_means": "classified correctly clean and on the attack's output (the attacker may submit x itself)",
        "worst_case": "per example, over clean and every attack listed",
        "randomness": _randomness(plan),
        "counts": {
            "nonzero": "non-zero kernel weights (conv/dense) of the path the trade-off selects",
            "macs": "non-zero multiply-accumulates per example of that path (conv/dense kernels; a dense runtime "
            "executes the zeros too)",
            "paths": {row.key: row.path for row in measured},
            "total_weights": counts.total,
            "conditioning_weights": counts.conditioning,
        },
        "masking_checks": {
            "order_tolerance": masking.ORDER_TOLERANCE,
            "gradient_free_margin": masking.GRADIENT_FREE_MARGIN,
            "weak_attack_margin": masking.WEAK_ATTACK_MARGIN,
            "large_eps": {"eps": sweep.large_eps(), "steps": masking.LARGE_EPS_STEPS,
                          "margin": masking.LARGE_EPS_MARGIN,
                          "accuracy": {row.key: row.large_eps_accuracy for row in measured}},
        },
        "seed": plan.seed,
    }
    return settings if plan.policy is None else exit_eval.add_settings(settings, plan, examples.classes)


def _method_name(model, smart):
    """"plain" for a plain model, else the conversion method; SMART's with its trade-off mode, e.g. "smart (blend)"."""
    if not smart:
        return "plain"
    method = registry.method_of(model)
    if method is None:
        return "mixed"
    if method.value != "smart":
        return method.value
    modes = sorted({l.tradeoff_mode for l in _compat.flatten_layers(model) if getattr(l, "tradeoff_mode", None)})
    return f"smart ({', '.join(modes)})" if modes else "smart"


def _randomness(plan):
    """How the report handled randomness: deterministic, noise at its mean, a fixed seed, or EOT."""
    if plan.noise == "expected" and plan.has_noise:
        return {"mode": "expected_noise", "note": "weight noise and injected noise at their mean (what export computes)"}
    randomised_rows = [t for t in plan.tradeoffs if plan.randomised(t)]
    if not randomised_rows:
        return {"mode": "deterministic"}
    eot = plan.eot_for(1.0)
    sources = [s for s, on in (("weight noise", plan.noisy), ("injected noise (NoiseInjection)", plan.injected)) if on]
    return {
        "mode": "eot" if eot > 1 else "fixed_seed",
        "eot_samples": eot,
        "seed": plan.seed,
        "randomised_rows": randomised_rows,
        "note": (
            f"fresh {' and '.join(sources)} on every forward pass"
            + (" at every trade-off" if plan.injected else "")
            + ", seeded by `seed` inside the evaluation (TensorFlow's global seed untouched); "
            + (f"each attack gradient (and Square's loss) averaged over {eot} draws; " if eot > 1 else "")
            + "accuracies from one draw per example"
        ),
    }
