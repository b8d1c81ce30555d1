"""One row of the report: a trade-off's accuracies, the per-example worst case, masking findings, path counts."""

import dataclasses

import numpy as np

from keras_smart.evaluation import masking
from keras_smart.evaluation import suite


@dataclasses.dataclass(frozen=True)
class Row:
    """What one trade-off row measured.

    Attributes:
      values: the report row {"tradeoff", "clean", <attacks>, "worst_case", "nonzero", "macs"}.
      findings: its gradient-masking warnings (sentences).
      large_eps_accuracy: accuracy under the large-budget PGD check.
      path: the path the trade-off selects ("clean", "adv", "union" or "model").
    """

    values: dict
    findings: list
    large_eps_accuracy: float
    path: str

    @property
    def key(self):
        """How the settings name the row: "model" for a plain model, else the trade-off, e.g. "0.2"."""
        tradeoff = self.values["tradeoff"]
        return "model" if tradeoff is None else f"{tradeoff:g}"


def measure_row(sweep, plan, tradeoff, index, counts, chance, bar):
    """Runs every attack of `plan` at the model's current trade-off (`tradeoff`, row `index`) and checks the results.

    Args:
      sweep: the evaluation's `sweep.Sweep`.
      plan: the evaluation's `plan.Plan`.
      tradeoff: the row's trade-off (None for a plain model); the model is already set to it.
      index: the row's position (seeds ART's Square per row).
      counts: `masks.count_nonzero(model)`.
      chance: the share of the most frequent class (the large-eps check's floor).
      bar: a `progress.Progress`.

    Returns:
      A `Row`.
    """
    label = "model" if tradeoff is None else f"λ={tradeoff:g}"
    eot = plan.eot_for(tradeoff)
    clean, results = sweep.run_row(plan.names, plan.components, eot, index, lambda what: bar.step(f"{label} {what}"))
    large_eps_accuracy = sweep.large_eps_accuracy(clean, eot, index)
    bar.step(f"{label} large-eps check")
    worst = clean.copy()
    for name in plan.names:
        worst &= results[name]
    accuracies = {name: float(results[name].mean()) for name in plan.names}
    findings = masking.masking_findings(
        label, accuracies, plan.names, plan.options, _broken_by_square_only(clean, results),
        (sweep.large_eps(), large_eps_accuracy, chance), worst_case=float(worst.mean()),
    )
    nonzero, macs, path = path_counts(counts, tradeoff, plan.blend)
    values = {
        "tradeoff": tradeoff,
        "clean": float(clean.mean()),
        **accuracies,
        "worst_case": float(worst.mean()),
        "nonzero": None if nonzero is None else int(nonzero),
        "macs": None if macs is None else int(macs),
    }
    return Row(values=values, findings=findings, large_eps_accuracy=large_eps_accuracy, path=path)


def _broken_by_square_only(clean, results):
    """The share of examples every gradient attack left robust but Square broke; None without Square."""
    square = results.get("square", results.get("autoattack:square"))
    if square is None:
        return None
    gradient_robust = clean.copy()
    for key, correct in results.items():
        if suite.kind(key.split(":")[-1]) in suite.GRADIENT_ATTACKS:
            gradient_robust &= correct
    return float(np.mean(gradient_robust & ~square))


def path_counts(counts, tradeoff, blend):
    """(non-zero kernel weights, MACs per example, path name) of the path `tradeoff` selects."""
    if tradeoff is None:
        return counts.adv, counts.macs_adv, "model"
    if tradeoff == 0.0:
        return counts.clean, counts.macs_clean, "clean"
    if blend and tradeoff < 1.0:
        # W * ((1 - lam) M_clean + lam M_adv) is non-zero wherever either mask is.
        macs = 0
        for row in counts.layers.values():
            if row["macs_dense"] is None:
                macs = None
                break
            macs += row["macs_dense"] // max(row["total"], 1) * row["union"]
        return counts.union, macs, "union"
    return counts.adv, counts.macs_adv, "adv"
