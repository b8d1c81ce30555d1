"""Gradient-masking checks: warnings when the attack results suggest the robust accuracy is overstated.

Four checks per row of results (RobustBench / AutoAttack practice): a stronger
attack may not report a higher accuracy than a weaker one; the gradient-free
Square attack may not break many examples every gradient attack left robust;
PGD at a budget that reaches one common input must bring accuracy near chance;
a listed PGD may not report far more than AutoAttack (or the worst case).
"""

from keras_smart.evaluation import report

_percent = report.percent

ORDER_TOLERANCE = 0.01  # a stronger attack may not report an accuracy more than 1 point higher
GRADIENT_FREE_MARGIN = 0.05  # Square may not break more than 5% of what every gradient attack left
LARGE_EPS_MARGIN = 0.10  # at a budget that reaches one common input, accuracy <= chance + 10 points
LARGE_EPS_STEPS = 20
WEAK_ATTACK_MARGIN = 0.10  # PGD may not report an accuracy more than 10 points above the worst case


class GradientMaskingWarning(UserWarning):
    """The attack results look like gradient masking: the robust accuracy is probably overstated."""


def order_pairs(names, options):
    """(weaker, stronger) attack pairs among `names`: a stronger attack must not report higher accuracy."""
    pairs = []
    pgds = sorted((int(n[3:]), n) for n in names if n.startswith("pgd"))
    if "fgsm" in names:
        pairs += [("fgsm", n) for _, n in pgds]
    pairs += [(a, b) for i, (_, a) in enumerate(pgds) for _, b in pgds[i + 1 :]]
    if "apgd-ce" in names:
        if "fgsm" in names:
            pairs.append(("fgsm", "apgd-ce"))
        pairs += [(n, "apgd-ce") for k, n in pgds if k <= options["apgd-ce"]["steps"]]
    if "autoattack" in names:
        pairs += [(n, "autoattack") for n in names if n != "autoattack"]
    return pairs


def masking_findings(label, accuracies, names, options, broken_by_square_only=None, large_eps=None, worst_case=None):
    """The gradient-masking warnings for one row of results (sentences; empty when nothing looks wrong).

    Args:
      label: how the row is named in the sentences, e.g. "λ=0.4".
      accuracies: {attack name: accuracy} of the row (attacks listed by the user).
      names: the listed attack names.
      options: the attack options in force (for APGD's steps).
      broken_by_square_only: the share of all examples that every gradient
        attack left robust but Square broke; None when not measured.
      large_eps: None or (eps, accuracy, chance) of the large-budget PGD check.
      worst_case: the row's per-example worst case over the listed attacks; None
        when not measured. A "pgd<K>" more than `WEAK_ATTACK_MARGIN` above
        AutoAttack (when listed, else above the worst case) is too weak to
        judge the model.

    Returns:
      A list of warning sentences.

    Example:
      >>> options = keras_smart.evaluation.DEFAULT_ATTACK_OPTIONS
      >>> [finding] = masking_findings("λ=1", {"fgsm": 0.40, "pgd20": 0.50}, ["fgsm", "pgd20"], options)
      >>> finding
      'λ=1: pgd20 reports a higher accuracy (50.0%) than the weaker fgsm (40.0%). ...'
    """
    findings = _order_findings(label, accuracies, names, options)
    if broken_by_square_only is not None and broken_by_square_only > GRADIENT_FREE_MARGIN:
        findings.append(
            f"{label}: the gradient-free Square attack broke {_percent(broken_by_square_only)}% of the examples "
            "that every gradient attack left robust. Gradient-based accuracy is then overstated: the model is "
            "likely masking gradients; trust the worst case (or autoattack) number."
        )
    if large_eps is not None:
        eps, accuracy, chance = large_eps
        if accuracy > chance + LARGE_EPS_MARGIN:
            findings.append(
                f"{label}: at eps = {eps:g}, a budget that can turn every input into the same image, PGD-"
                f"{LARGE_EPS_STEPS} still leaves {_percent(accuracy)}% accuracy (chance: {_percent(chance)}%). "
                "Attacks that cannot reach chance at an unbounded budget are failing: gradients are likely masked."
            )
    return findings + _weak_pgd_findings(label, accuracies, names, worst_case)


def _order_findings(label, accuracies, names, options):
    """A stronger attack reporting a higher accuracy than a weaker one (by more than `ORDER_TOLERANCE`)."""
    return [
        f"{label}: {stronger} reports a higher accuracy ({_percent(accuracies[stronger])}%) than the weaker "
        f"{weaker} ({_percent(accuracies[weaker])}%). A stronger attack should never do worse: the loss "
        "surface may be masking gradients (non-differentiable or saturated layers, randomness without EOT)."
        for weaker, stronger in order_pairs(names, options)
        if accuracies[stronger] > accuracies[weaker] + ORDER_TOLERANCE
    ]


def _weak_pgd_findings(label, accuracies, names, worst_case):
    """PGD attacks whose accuracy is more than `WEAK_ATTACK_MARGIN` above AutoAttack (or the worst case)."""
    if "autoattack" in names:
        reference, what = accuracies["autoattack"], "autoattack"
    elif worst_case is not None:
        reference, what = worst_case, "the worst case over the listed attacks"
    else:
        return []
    findings = []
    for name in names:
        if not name.startswith("pgd") or accuracies[name] <= reference + WEAK_ATTACK_MARGIN:
            continue
        findings.append(
            f"{label}: {name} reports {_percent(accuracies[name])}% accuracy, "
            f"{_percent(accuracies[name] - reference)} points above {what} ({_percent(reference)}%). "
            f"PGD at these settings is too weak to judge this model: compare models by AutoAttack / the worst "
            f"case, not by {name}."
        )
    return findings
