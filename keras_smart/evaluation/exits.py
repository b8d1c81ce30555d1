"""Multi-exit evaluation: the RDI-Nets attacks and adaptive ones, every output judged by the exit policy.

A multi-exit model (`keras_smart.exits.attach`) predicts with the exit its
`ExitPolicy` picks: the first side exit whose prediction entropy is below its
threshold, else the final one. Every accuracy here is of that prediction, on
clean inputs and on each attack's output.

Each listed gradient attack ("fgsm", "pgd<K>") is a family of attacks at that
strength: the paper's non-adaptive ones, which ignore the policy ("exit<k>":
PGD on exit k alone; "average": the mean loss over exits; "max_average": one
PGD per exit, per example the candidate with the largest summed loss), and
adaptive ones, which follow it ("adaptive_follow": at every step the exit the
policy picks for the current input; for "pgd<K>" also "adaptive_cosine", the
same with cosine steps from 2 * eps, which measured stronger than the fixed
2.5 * eps / K on a trained digits model; "adaptive_to_exit<k>": steer the input
to leave at side exit k and be wrong there). Square runs once, gradient-free, on
the routed logits (the logits of the exit the policy picks: it follows the
policy by construction). "adaptive" is the per-example worst case over the
adaptive columns, "<family>" (e.g. "pgd20") over a family's columns, and
"worst_case" over clean and every column. A policy that looks robust only
because the non-adaptive attacks ignore it shows up in the adaptive columns.
"""

import dataclasses
import json

import numpy as np
import tensorflow as tf

from keras_smart import exits as exits_lib
from keras_smart.attacks import multi_exit
from keras_smart.evaluation import forward as forward_lib
from keras_smart.evaluation import masking
from keras_smart.evaluation import report as report_lib
from keras_smart.evaluation import rows as rows_lib
from keras_smart.evaluation import suite
from keras_smart.evaluation import sweep as sweep_lib

# Attacks when `attacks=None`: two strengths of the family (FGSM is cheap; the order check compares them).
DEFAULT_ATTACKS = ("fgsm", "pgd20")
# Attacks on one set of logits that have no multi-exit form here.
REFUSED_ATTACKS = ("apgd-ce", "apgd-dlr", "autoattack")
SQUARE_COLUMN = "adaptive_square"
COSINE_COLUMN = "adaptive_cosine"
_STEERED = "adaptive_to_exit"


# --- what is evaluated ------------------------------------------------------------------------------


def check_policy(model, policy):
    """Whether `model` is evaluated as a multi-exit model under `policy`; raises for a missing or wrong policy.

    Raises:
      ValueError: a multi-exit model without a policy; a policy with a
        single-exit model; a policy calibrated for another model (the policy's
        own `check_model` error).
      TypeError: `policy` is not an `ExitPolicy`.
    """
    multi = exits_lib.is_multi_exit(model)
    if policy is None:
        if multi:
            raise ValueError(
                f"'{model.name}' is a multi-exit model: its prediction depends on which exit each input leaves at, "
                "so evaluate_tradeoff needs the exit policy. Pass policy=keras_smart.exits.calibrate(model, "
                "held_out, budget=...) (held_out: (x, y) examples not in `data`; budget: the share of the full "
                "model's MACs to spend per example on average, in (0, 1])."
            )
        return False
    if not isinstance(policy, exits_lib.ExitPolicy):
        raise TypeError(
            "`policy` must be a keras_smart.exits.ExitPolicy (from keras_smart.exits.calibrate or "
            f"ExitPolicy.from_json). Received: {type(policy).__name__}"
        )
    if not multi:
        raise ValueError(
            f"`policy` routes the exits of a multi-exit model (made by keras_smart.exits.attach); '{model.name}' "
            "has no side exits. Evaluate it without `policy`, or attach exits and calibrate a policy for them: "
            "keras_smart.exits.calibrate(keras_smart.exits.attach(model, after=[...]), held_out, budget=...)."
        )
    policy.check_model(model)
    if len(model.inputs) != 1:
        raise ValueError(
            f"evaluate_tradeoff needs a model with one input; '{model.name}' has {len(model.inputs)} inputs."
        )
    return True


def parse_attacks(names):
    """The listed attack names for a multi-exit model: "fgsm" / "pgd<K>" families, optionally "square".

    Example:
      >>> parse_attacks(("FGSM", "pgd20"))
      ['fgsm', 'pgd20']
    """
    parsed = suite.parse_attacks(names)
    refused = [n for n in parsed if n in REFUSED_ATTACKS]
    if refused:
        raise ValueError(
            f"{', '.join(repr(n) for n in refused)}: APGD and AutoAttack attack one set of logits; a multi-exit "
            "model predicts with the exit its policy picks, "
            "and this evaluation has no multi-exit form of them (calling them AutoAttack would overstate what "
            "ran). For a multi-exit model each listed 'fgsm' / 'pgd<K>' runs the RDI-Nets attacks (one per exit, "
            "average, max-average) and the adaptive ones that follow the policy; Square on the routed logits "
            "always runs (its settings: attack_options['square']). Pass e.g. attacks=('fgsm', 'pgd20')."
        )
    if not families(parsed):
        raise ValueError(
            "A multi-exit evaluation needs at least one gradient attack, 'fgsm' or 'pgd<K>' (e.g. 'pgd20'); "
            f"Square runs with it. Received: attacks={list(names)}"
        )
    return parsed


def families(names):
    """The gradient attack families among the listed names ("fgsm", "pgd<K>")."""
    return [n for n in names if n != "square"]


def components(names):
    """What runs: every family, then Square (always: it is part of "adaptive")."""
    return families(names) + ["square"]


def attack_columns(exits, family):
    """The columns `family` fills for a model with `exits` outputs, in row order.

    Example:
      >>> attack_columns(2, "pgd20")
      ['exit1', 'exit2', 'average', 'max_average', 'adaptive_follow', 'adaptive_cosine', 'adaptive_to_exit1']
      >>> attack_columns(2, "fgsm")  # one step: no step schedule
      ['exit1', 'exit2', 'average', 'max_average', 'adaptive_follow', 'adaptive_to_exit1']
    """
    cosine = [COSINE_COLUMN] if suite.kind(family) == "pgd" else []
    return non_adaptive_columns(exits) + ["adaptive_follow", *cosine] + [f"{_STEERED}{k}" for k in range(1, exits)]


def adaptive_columns(exits, family_names):
    """The columns "adaptive" is the worst case over: the policy-following attacks and Square."""
    cosine = [COSINE_COLUMN] if any(suite.kind(f) == "pgd" for f in family_names) else []
    return ["adaptive_follow", *cosine, *(f"{_STEERED}{k}" for k in range(1, exits)), SQUARE_COLUMN]


def non_adaptive_columns(exits):
    """The paper's attacks, which ignore the policy."""
    return [f"exit{k}" for k in range(1, exits + 1)] + ["average", "max_average"]


def row_steps(plan):
    """Progress steps per row: clean, every family's columns, Square, the large-eps check."""
    return 3 + sum(len(attack_columns(plan.exits, family)) for family in families(plan.names))


def column_attack(column, route_fn):
    """(mode, mode arguments) of `multi_exit_pgd` for a family column; exit numbers in names count from 1."""
    if column.startswith(_STEERED):
        return "adaptive", {"target_exit": int(column[len(_STEERED):]) - 1}  # steered: needs no route
    if column.startswith("exit"):
        return "single", {"exit_index": int(column[len("exit"):]) - 1}
    if column in ("adaptive_follow", COSINE_COLUMN):
        return "adaptive", {"route_fn": route_fn}
    return column, {}  # average, max_average


def column_config(config, column):
    """The family's `AttackConfig` for `column`: "adaptive_cosine" takes cosine steps from 2 * eps."""
    if column != COSINE_COLUMN:
        return config
    return dataclasses.replace(config, step_schedule="cosine", step_size=None)  # None: 2 * eps for cosine


# --- running the attacks ----------------------------------------------------------------------------


class ExitSweep(sweep_lib.Sweep):
    """A `Sweep` whose predictions are the policy's and whose attacks include the multi-exit family.

    Predictions, Square, the L2 Square of IBM ART and the large-eps check see
    the routed logits (those of the exit the policy picks); the family's
    attacks, named "<family>/<column>" (e.g. "pgd20/exit1"), see every exit's
    logits. Seeds and EOT are the `Sweep`'s.
    """

    def __init__(self, model, x, labels, *, policy, expected_noise, **settings):
        self.model = model
        self.policy = policy
        self.exit_logits = forward_lib.Forward(model, expected_noise=expected_noise)
        super().__init__(model, x, labels, expected_noise=expected_noise, forward=self.routed, **settings)
        self._with_exits = forward_lib.compile_fn(self.routed_with_exits, self._specs[0], seed=self.seed)

    def routed_with_exits(self, x, training=False):
        """(logits of the exit the policy picks [B, C], that exit [B] int32)."""
        logits = self.exit_logits(x, training)
        exit_ids = tf.cast(self.policy.route(logits), tf.int32)
        return tf.gather(tf.stack(logits, axis=1), exit_ids, batch_dims=1), exit_ids

    def routed(self, x, training=False):
        """The logits of the exit the policy picks: the model's prediction, as attacks and predictions see it."""
        return self.routed_with_exits(x, training)[0]

    def clean_and_exits(self):
        """(per-example clean correctness, the exit each example leaves at), in one forward pass."""
        correct, exit_ids = [], []
        for chunk in self._chunks(np.arange(len(self.x))):
            logits, route = self._with_exits(tf.constant(self.x[chunk]))
            correct.append(np.argmax(logits.numpy(), -1) == self.labels[chunk])
            exit_ids.append(route.numpy().astype(np.int64))
        return np.concatenate(correct), np.concatenate(exit_ids)

    def in_graph_attack(self, name, eot):
        """A family column "<family>/<column>" as a compiled multi-exit attack; other names as the `Sweep`'s."""
        if "/" not in name:
            return super().in_graph_attack(name, eot)
        family, column = name.split("/")
        config = column_config(self.attack_config(family), column)
        mode, mode_args = column_attack(column, self.policy.route)

        def attack(x, y):
            return multi_exit.run_multi_exit(
                config, self.exit_logits, x, y, mode=mode, seed=self.seed, eot_samples=eot, **mode_args
            )

        return attack, self._specs


# --- one row ----------------------------------------------------------------------------------------


def measure_row(sweep, plan, tradeoff, index, counts, chance, bar):
    """Every column at the model's current trade-off, judged by the policy; the row's cost under the policy.

    The arguments are those of `rows.measure_row`; `sweep` is an `ExitSweep`.

    Returns:
      A `rows.Row` whose values hold "tradeoff", "clean", the attack columns
      (see the module docstring), "worst_case", "nonzero", "macs" (expected
      MACs per example under the policy), "expected_macs" (that as a share of
      the policy's full-model MACs), "exit_shares" and "exit_macs".
    """
    label = "model" if tradeoff is None else f"λ={tradeoff:g}"
    eot = plan.eot_for(tradeoff)
    step = lambda what: bar.step(f"{label} {what}")  # noqa: E731
    clean, exit_ids = sweep.clean_and_exits()
    step("clean")
    results = {}
    for family in families(plan.names):
        for column in attack_columns(plan.exits, family):
            results[f"{family}/{column}"] = sweep.attack(f"{family}/{column}", clean, eot, index)
            step(f"{family} {column}")
    results[SQUARE_COLUMN] = sweep.attack("square", clean, eot, index)
    step("square")
    large_eps_accuracy = sweep.large_eps_accuracy(clean, eot, index)
    step("large-eps check")
    columns = merge_columns(results, families(plan.names), plan.exits)
    worst = clean.copy()
    for correct in columns.values():
        worst &= correct
    accuracies = {name: float(correct.mean()) for name, correct in columns.items()}
    findings = _findings(
        label, plan, accuracies, _broken_by_square_only(clean, results),
        (sweep.large_eps(), large_eps_accuracy, chance), float(worst.mean()),
    )
    nonzero, _, path = rows_lib.path_counts(counts, tradeoff, plan.blend)
    values = {
        "tradeoff": tradeoff,
        "clean": float(clean.mean()),
        **accuracies,
        "worst_case": float(worst.mean()),
        "nonzero": None if nonzero is None else int(nonzero),
        **policy_cost(exit_ids, exits_lib.exit_macs(sweep.model, tradeoff=tradeoff), plan.policy),
    }
    return rows_lib.Row(values=values, findings=findings, large_eps_accuracy=large_eps_accuracy, path=path)


def merge_columns(results, family_names, exits):
    """{column: per-example correctness}: each column over every family, "adaptive", then each family.

    `results` maps "<family>/<column>" and `SQUARE_COLUMN` to per-example
    correctness; an example is robust to a column only if it is robust to it
    at every listed strength that runs it.
    """
    columns = {}
    for column in non_adaptive_columns(exits) + adaptive_columns(exits, family_names)[:-1]:  # row order
        runs = [results[f"{f}/{column}"] for f in family_names if f"{f}/{column}" in results]
        columns[column] = np.logical_and.reduce(runs)
    columns[SQUARE_COLUMN] = results[SQUARE_COLUMN]
    columns["adaptive"] = np.logical_and.reduce([columns[c] for c in adaptive_columns(exits, family_names)])
    for family in family_names:
        columns[family] = np.logical_and.reduce([results[f"{family}/{c}"] for c in attack_columns(exits, family)])
    return columns


def policy_cost(exit_ids, exit_macs, policy):
    """The row's cost under the policy: exit shares, expected MACs per example, and as a share of the full model.

    "macs" = sum_k share_k * exit_macs[k] (`exit_macs` of the path the row's
    trade-off selects); "expected_macs" = macs / policy.macs[-1], the full
    model's MACs at calibration (one scale for every row; at the policy's
    trade-off it is `ExitPolicy.expected_macs`).

    Example:
      >>> policy = keras_smart.exits.ExitPolicy(
      ...     thresholds=(0.5,), macs=(100, 400), exits=("pool1",), model_name="m", budget=None, tradeoff=None)
      >>> policy_cost(np.array([0, 0, 0, 1]), (100, 400), policy)
      {'macs': 175.0, 'expected_macs': 0.4375, 'exit_shares': [0.75, 0.25], 'exit_macs': [100, 400]}
    """
    exit_macs = [int(m) for m in exit_macs]
    shares = np.bincount(np.asarray(exit_ids, np.int64), minlength=len(exit_macs)) / max(len(exit_ids), 1)
    macs = float(np.dot(shares, exit_macs))
    return {
        "macs": macs,
        "expected_macs": macs / float(policy.macs[-1]),
        "exit_shares": [float(s) for s in shares],
        "exit_macs": exit_macs,
    }


def _broken_by_square_only(clean, results):
    """The share of examples every gradient attack left robust but Square broke."""
    gradient_robust = clean.copy()
    for key, correct in results.items():
        if key != SQUARE_COLUMN:
            gradient_robust &= correct
    return float(np.mean(gradient_robust & ~results[SQUARE_COLUMN]))


def _findings(label, plan, accuracies, broken_by_square_only, large_eps, worst_case):
    """The gradient-masking checks over the families, and an adaptive attack weaker than a non-adaptive one."""
    names = families(plan.names)
    findings = masking.masking_findings(
        label, {n: accuracies[n] for n in names}, names, plan.options, broken_by_square_only, large_eps,
        worst_case=worst_case,
    )
    for column in non_adaptive_columns(plan.exits):
        if accuracies["adaptive"] > accuracies[column] + masking.ORDER_TOLERANCE:
            findings.append(
                f"{label}: the adaptive attacks, which follow the exit policy, report a higher accuracy "
                f"({report_lib.percent(accuracies['adaptive'])}%) than {column} "
                f"({report_lib.percent(accuracies[column])}%), which ignores it. An attack that knows the policy "
                "should do at least as well: the adaptive attacks are too weak at these settings (more steps?); "
                "trust the worst case."
            )
    return findings


# --- the report's settings --------------------------------------------------------------------------


def add_settings(settings, plan, classes):
    """Adds the policy, every column's attack settings and cost, and what the columns and counts mean."""
    eot = plan.eot_for(1.0)
    attacks = {family: family_settings(family, plan, eot, classes) for family in families(plan.names)}
    square = suite.attack_settings("square", plan.eps, plan.norm, plan.options, eot, classes)
    attacks[SQUARE_COLUMN] = {**square, "logits": "the exit the policy picks (routed), re-routed at every query"}
    settings["attacks"] = attacks
    settings["exit_policy"] = json.loads(plan.policy.to_json())
    settings["exits"] = plan.exits
    settings["prediction"] = "the class of the exit the policy picks (the first side exit below its entropy threshold)"
    settings["robust_means"] += "; every prediction is the policy's, on the attack's output"
    settings["adaptive"] = "per example, over " + ", ".join(adaptive_columns(plan.exits, families(plan.names)))
    settings["worst_case"] = "per example, over clean and every attack column"
    settings["counts"].update(
        macs="expected multiply-accumulates per example under the policy: sum over exits of its share of the "
        "examples times exit_macs",
        exit_macs="multiply-accumulates per example up to and including each exit, of the path the trade-off selects",
        expected_macs="macs as a share of the full model's MACs at calibration (exit_policy['macs'][-1])",
        exit_shares="the share of the (clean) examples leaving at each exit",
    )
    return settings


def family_settings(family, plan, eot, classes):
    """One family's settings and, per column, its mode and cost (passes per attacked example, at most)."""
    base = suite.attack_settings(family, plan.eps, plan.norm, plan.options, eot, classes)
    columns = {}
    for column in attack_columns(plan.exits, family):
        mode, mode_args = column_attack(column, None)
        columns[column] = {"mode": mode, **_column_cost(base, mode, plan.exits)}
        if column == COSINE_COLUMN:
            columns[column].update(step_schedule="cosine", step_size=2.0 * plan.eps)
        for key in ("exit_index", "target_exit"):
            if key in mode_args:
                columns[column][key.replace("_index", "")] = mode_args[key] + 1  # exits count from 1, as the names
    return {
        **base,
        "attack": f"{base['attack']} multi-exit family",
        "implementation": "keras_smart.attacks.multi_exit (in-graph)",
        "columns": columns,
        "forward_passes": sum(c["forward_passes"] for c in columns.values()),
        "gradient_passes": sum(c["gradient_passes"] for c in columns.values()),
    }


def _column_cost(base, mode, exits):
    """Forward and gradient passes of one column: a single-attack run, or one per exit for max-average."""
    restarts, gradients = base["restarts"], base["gradient_passes"]
    per_restart = gradients // restarts
    if mode != "max_average":
        return {"forward_passes": base["forward_passes"], "gradient_passes": gradients}
    # One run per exit, a forward pass per candidate to pick the strongest, then the prediction.
    return {
        "forward_passes": restarts * (exits * per_restart + exits + 1),
        "gradient_passes": restarts * exits * per_restart,
    }
