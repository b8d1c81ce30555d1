"""TradeoffReport: what `evaluate_tradeoff` measured, as JSON, a Markdown table and a frontier plot."""

import dataclasses
import json

EXTRA = "pip install keras_smart[eval]"

# Keys of a row that are not attack names (the last three: a multi-exit model's cost under its policy).
_FIXED_KEYS = ("tradeoff", "clean", "worst_case", "nonzero", "macs", "expected_macs", "exit_shares", "exit_macs")


@dataclasses.dataclass(frozen=True)
class TradeoffReport:
    """What `evaluate_tradeoff` measured: one row per trade-off, the settings, and masking warnings.

    Attributes:
      settings: a JSON-ready dict: threat model, examples, every attack's
        settings and cost, how randomness was handled, what the counts mean.
      rows: one dict per trade-off lam: {"tradeoff": lam (None for a plain
        model), "clean": accuracy, "<attack name>": accuracy, ...,
        "worst_case": accuracy, "nonzero": n, "macs": n}. Accuracies are
        fractions in [0, 1]. A multi-exit model's rows (evaluated under its
        exit policy) hold its attack columns, "macs" as the expected MACs
        per example, and "expected_macs", "exit_shares", "exit_macs".
      warnings: gradient-masking (and other) warnings, as sentences.

    `settings["model_fingerprint"]` (also `report.fingerprint`) is
    `model_fingerprint(model)` of the weights the report measured:
    `keras_smart.export.bundle` refuses a report whose fingerprint is not the
    exported model's (e.g. one measured before `keras_smart.pruning.prune`).

    Example:
      >>> import tempfile, warnings
      >>> with warnings.catch_warnings():
      ...     warnings.simplefilter("ignore")  # an untrained model: the masking checks may fire
      ...     report = keras_smart.evaluate_tradeoff(
      ...         smart, (x, y), tradeoffs=(0.0, 1.0), attacks=("fgsm",), eps=0.1, max_examples=16, progress=False)
      >>> [row["tradeoff"] for row in report.rows], report.attacks
      ([0.0, 1.0], ['fgsm'])
      >>> print(report.to_markdown().splitlines()[0])
      | λ | clean | fgsm | worst case | non-zeros | non-zero MACs |
      >>> TradeoffReport.from_json(report.to_json()) == report
      True
      >>> report.plot(tempfile.mkdtemp() + "/frontier.png", baselines={"PGD-AT": (0.97, 0.88)})
      '.../frontier.png'
    """

    settings: dict
    rows: tuple
    warnings: tuple = ()

    @property
    def fingerprint(self):
        """`model_fingerprint` of the model state measured (None for a report without one)."""
        return self.settings.get("model_fingerprint") if isinstance(self.settings, dict) else None

    @property
    def attacks(self):
        """The attack names, in the order the rows hold them."""
        return [key for key in (self.rows[0] if self.rows else {}) if key not in _FIXED_KEYS]

    def to_dict(self):
        """{"settings": ..., "rows": [...], "warnings": [...]}: what `to_json` writes."""
        return {"settings": self.settings, "rows": [dict(r) for r in self.rows], "warnings": list(self.warnings)}

    def to_json(self, indent=2):
        """The report as a JSON string: {"settings": {...}, "rows": [...], "warnings": [...]}."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text):
        """The report `to_json` wrote (e.g. to plot or compare a saved evaluation).

        Reports written before the trade-offs were called `tradeoffs` (settings
        key "lambdas") are read too; their settings then say "tradeoffs".

        Example:
          >>> old = '{"settings": {"lambdas": [0.0, 1.0]}, "rows": [], "warnings": []}'
          >>> TradeoffReport.from_json(old).settings
          {'tradeoffs': [0.0, 1.0]}
        """
        data = json.loads(text)
        missing = {"settings", "rows", "warnings"} - set(data)
        if missing:
            raise ValueError(f"Not a TradeoffReport JSON: it lacks {sorted(missing)}.")
        settings = {("tradeoffs" if key == "lambdas" else key): value for key, value in data["settings"].items()}
        return cls(settings=settings, rows=tuple(data["rows"]), warnings=tuple(data["warnings"]))

    def to_markdown(self):
        """A Markdown table (accuracies in %), the threat model under it, then any warnings."""
        lines = _table(self.rows, self.attacks) + ["", _threat_model(self.settings)]
        if "exit_policy" in self.settings:
            lines += ["", _policy_line(self.settings)]
        attacks = self.settings.get("attacks", {})
        described = [describe_attack(attacks[name]) for name in self.attacks if name in attacks]
        if described:
            lines += ["", "Attacks: " + "; ".join(described) + "."]
        if self.warnings:
            lines += ["", "**Warnings**"] + [f"- {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()

    def plot(self, path, baselines=None, robust="worst_case"):
        """Writes a PNG of the frontier: clean accuracy vs robust accuracy, each point labelled with lam.

        Args:
          path: where to write the PNG.
          baselines: optional {label: (clean, robust)} accuracies (fractions in
            [0, 1]) or {label: TradeoffReport} (its first row), drawn as
            separate points, e.g. {"standard": (0.99, 0.0), "PGD-AT": (0.97, 0.88)}.
          robust: the row key on the vertical axis: "worst_case" (default) or an attack name.

        Returns:
          `path` as a string.

        Raises:
          ImportError: matplotlib is missing (`pip install keras_smart[eval]`).
          ValueError: an unknown `robust` key or a baseline that is not two fractions.
        """
        if robust != "worst_case" and robust not in self.attacks:
            raise ValueError(
                f"`robust` must be 'worst_case' or one of the report's attacks {self.attacks}. Received: {robust!r}"
            )
        points = _baseline_points(baselines, robust)
        fig = _figure()
        ax = fig.add_subplot()
        clean = [100 * r["clean"] for r in self.rows]
        attacked = [100 * r[robust] for r in self.rows]
        ax.plot(clean, attacked, "-o", color="tab:blue", label=self._model_label())
        for row, cx, cy in zip(self.rows, clean, attacked):
            label = "plain" if row["tradeoff"] is None else f"λ={row['tradeoff']:g}"
            if row.get("expected_macs") is not None:
                label += f", {percent(row['expected_macs'])}% MACs"
            ax.annotate(label, (cx, cy), textcoords="offset points", xytext=(6, 4), fontsize=8)
        markers = iter("sD^vP*Xh")
        for label, (bc, br) in points.items():
            ax.scatter([100 * bc], [100 * br], marker=next(markers, "o"), s=45, zorder=3, label=label)
        what = "worst case" if robust == "worst_case" else robust
        ax.set_xlabel("clean accuracy (%)")
        ax.set_ylabel(f"robust accuracy (%), {what}")
        ax.set_title(f"{_norm_symbol(self.settings)} eps = {self.settings.get('eps'):g}, "
                     f"{self.settings.get('examples')} examples", fontsize=10)
        ax.set_xlim(*_clean_axis_limits(clean + [100 * bc for bc, _ in points.values()]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(str(path), format="png")
        return str(path)

    def _model_label(self):
        label = self.settings.get("model", "model")
        return f"{label}, {self.settings['method']}" if self.settings.get("method") else label


def _table(rows, names):
    exits = bool(rows) and "exit_shares" in rows[0]
    header = ["λ", "clean", *names, "worst case", "non-zeros", "non-zero MACs"]
    header += ["MACs (% of full)", "exit shares (%)"] if exits else []
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    for row in rows:
        cells = ["—" if row["tradeoff"] is None else f"{row['tradeoff']:g}"]
        cells += [percent(row[key]) for key in ("clean", *names, "worst_case")]
        cells += [_count(row["nonzero"]), _count(row["macs"])]
        if exits:
            cells += [percent(row["expected_macs"]), " / ".join(percent(s) for s in row["exit_shares"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _policy_line(settings):
    policy = settings["exit_policy"]
    thresholds = ", ".join(f"{t:.3g}" for t in policy.get("thresholds", ()))
    budget = policy.get("budget")
    return (
        f"Exit policy: side exits after {', '.join(policy.get('exits', ()))}, entropy thresholds {thresholds}"
        + ("" if budget is None else f", calibrated to {percent(budget)}% of the MACs")
        + ". Every accuracy is of the exit the policy picks; adaptive = per example over the attacks that "
        "follow the policy (and Square on the routed logits); MACs = expected per example under the policy."
    )


def _threat_model(settings):
    return (
        f"Accuracy (%) on {settings.get('examples')} examples, {_norm_symbol(settings)} eps = "
        f"{settings.get('eps'):g}; an example is robust to an attack only if it is also classified correctly "
        "clean; worst case = per example over every attack. Randomness: "
        f"{settings.get('randomness', {}).get('mode', 'deterministic')}. Non-zeros and non-zero MACs: kernel "
        "weights and multiply-accumulates per example with a non-zero weight, on the path each λ selects; a "
        "dense runtime (LiteRT) executes every MAC of its file, zeros included (a bundle's smart.json gives "
        "each file's executed_macs; keras_smart.strip(..., compact=True) removes dropped channels)."
    )


def _norm_symbol(settings):
    return "L∞" if settings.get("norm") == "linf" else "L2"


def describe_attack(settings):
    """A phrase for the Markdown report, e.g. "APGD-T (targeted DLR), 100 steps, 9 target classes".

    Example:
      >>> describe_attack({"attack": "PGD-20", "steps": 20, "restarts": 2})
      'PGD-20, 20 steps, 2 restarts'
    """
    if "parts" in settings:
        return "AutoAttack = " + " then ".join(describe_attack(part) for part in settings["parts"].values())
    if "queries" in settings:
        cost = f"{settings['queries']} queries"
    else:
        cost = f"{settings['steps']} step{'s' if settings['steps'] != 1 else ''}"
    parts = [settings["attack"], cost]
    if settings.get("target_classes"):
        parts.append(f"{settings['target_classes']} target classes")
    if settings.get("restarts", 1) > 1:
        parts.append(f"{settings['restarts']} restarts")
    if settings.get("eot_samples", 1) > 1:
        parts.append(f"EOT over {settings['eot_samples']} draws")
    return ", ".join(parts)


def percent(value):
    """A fraction as a percentage with one decimal ("—" for None)."""
    return "—" if value is None else f"{100 * value:.1f}"


def _count(value):
    return "—" if value is None else f"{int(value):,}"


def _figure():
    """A matplotlib Figure drawn without pyplot (no global state)."""
    try:
        from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
        from matplotlib import figure  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise ImportError(f"TradeoffReport.plot needs matplotlib: {EXTRA}") from e
    fig = figure.Figure(figsize=(6.0, 4.5), dpi=120)
    backend_agg.FigureCanvasAgg(fig)
    return fig


def _clean_axis_limits(xs):
    """At least 5 points wide: a 0.2-point difference in clean accuracy should look like one."""
    middle, half = (max(xs) + min(xs)) / 2, max(2.5, (max(xs) - min(xs)) / 2 + 0.5)
    return max(0.0, middle - half) - 0.5, min(100.0, middle + half) + 1.5


def _baseline_points(baselines, robust):
    if baselines is None:
        return {}
    if not isinstance(baselines, dict):
        raise TypeError(
            "`baselines` must be a dict {label: (clean, robust)} or {label: TradeoffReport}. "
            f"Received: {type(baselines).__name__}"
        )
    return {str(label): _baseline_point(label, value, robust) for label, value in baselines.items()}


def _baseline_point(label, value, robust):
    if isinstance(value, TradeoffReport):
        row = value.rows[0]
        value = (row["clean"], row.get(robust, row["worst_case"]))
    try:
        clean, attacked = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"Baseline {label!r} must be (clean, robust) accuracies. Received: {value!r}") from None
    if not (0.0 <= clean <= 1.0 and 0.0 <= attacked <= 1.0):
        raise ValueError(
            f"Baseline {label!r} accuracies must be fractions in [0, 1] (not percentages). "
            f"Received: ({clean}, {attacked})"
        )
    return clean, attacked
