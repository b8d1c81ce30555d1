"""evaluate_tradeoff() -> TradeoffReport: credible robustness across the trade-off; adapters to IBM ART.

The evaluation follows RobustBench / AutoAttack practice: a diverse attack set
(AutoAttack's APGD-CE, targeted APGD-DLR and the gradient-free Square attack),
the worst case per example, every setting and the cost in forward passes in the
report, and checks that warn when the numbers look like gradient masking.
"""

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import numbers
import re
import time
import warnings

from absl import logging
import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import attacks as attacks_lib
from keras_smart import config as config_lib
from keras_smart import labels as labels_lib
from keras_smart import masks
from keras_smart import training
from keras_smart.attacks import common as attacks_common
from keras_smart.layers import base
from keras_smart.layers import conditional_kernel as ck

keras = _compat.keras

DEFAULT_LAMBDAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
ATTACK_NAMES = ("fgsm", "pgd<K>", "apgd-ce", "apgd-dlr", "square", "autoattack")
AUTOATTACK = ("apgd-ce", "apgd-dlr", "square")
GRADIENT_ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr")

# AutoAttack's "standard" settings (Croce & Hein 2020), and one PGD run.
DEFAULT_ATTACK_OPTIONS = {
    "pgd": {"restarts": 1},
    "apgd-ce": {"steps": 100, "restarts": 1},
    "apgd-dlr": {"steps": 100, "restarts": 1, "target_classes": 9},
    "square": {"queries": 5000, "p_init": 0.8, "restarts": 1},
}

# Gradient-masking checks.
ORDER_TOLERANCE = 0.01  # a stronger attack may not report an accuracy more than 1 point higher
GRADIENT_FREE_MARGIN = 0.05  # Square may not break more than 5% of what every gradient attack left
LARGE_EPS_MARGIN = 0.10  # at a budget that reaches one common input, accuracy <= chance + 10 points
LARGE_EPS_STEPS = 20
WEAK_ATTACK_MARGIN = 0.10  # PGD may not report an accuracy more than 10 points above the worst case

# Forward passes each gradient averages over for a randomised model when eot_samples=None.
DEFAULT_EOT_SAMPLES = 4

_EXTRA = "pip install keras_smart[eval]"


class GradientMaskingWarning(UserWarning):
    """The attack results look like gradient masking: the robust accuracy is probably overstated."""


# --- the report ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TradeoffReport:
    """What `evaluate_tradeoff` measured: one row per trade-off, the settings, and masking warnings.

    Attributes:
      settings: a JSON-ready dict: threat model, examples, every attack's
        settings and cost, how randomness was handled, what the counts mean.
      rows: one dict per trade-off lam: {"tradeoff": lam (None for a plain
        model), "clean": accuracy, "<attack name>": accuracy, ...,
        "worst_case": accuracy, "nonzero": n, "macs": n}. Accuracies are
        fractions in [0, 1].
      warnings: gradient-masking (and other) warnings, as sentences.

    `settings["model_fingerprint"]` (also `report.fingerprint`) is
    `model_fingerprint(model)` of the weights the report measured:
    `keras_smart.export.bundle` refuses a report whose fingerprint is not the
    exported model's (e.g. one measured before `keras_smart.pruning.prune`).

    Example:
      >>> report = keras_smart.evaluate_tradeoff(smart, (x_test, y_test), eps=0.3)
      >>> print(report.to_markdown())
      >>> report.plot("frontier.png", baselines={"PGD-AT": (0.97, 0.88)})
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
        fixed = ("tradeoff", "clean", "worst_case", "nonzero", "macs")
        return [key for key in (self.rows[0] if self.rows else {}) if key not in fixed]

    def to_dict(self):
        """{"settings": ..., "rows": [...], "warnings": [...]}: what `to_json` writes."""
        return {"settings": self.settings, "rows": [dict(r) for r in self.rows], "warnings": list(self.warnings)}

    def to_json(self, indent=2):
        """The report as a JSON string: {"settings": {...}, "rows": [...], "warnings": [...]}.

        Example:
          >>> json.loads(report.to_json())["rows"][0]["worst_case"]
        """
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text):
        """The report `to_json` wrote (e.g. to plot or compare a saved evaluation).

        Example:
          >>> report = TradeoffReport.from_json(open("report.json").read())
        """
        data = json.loads(text)
        missing = {"settings", "rows", "warnings"} - set(data)
        if missing:
            raise ValueError(f"Not a TradeoffReport JSON: it lacks {sorted(missing)}.")
        return cls(settings=data["settings"], rows=tuple(data["rows"]), warnings=tuple(data["warnings"]))

    def to_markdown(self):
        """A Markdown table (accuracies in %), the threat model under it, then any warnings.

        Example:
          >>> print(report.to_markdown())
        """
        names = self.attacks
        header = ["λ", "clean", *names, "worst case", "non-zeros", "MACs"]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---:" for _ in header) + "|",
        ]
        for row in self.rows:
            cells = ["—" if row["tradeoff"] is None else f"{row['tradeoff']:g}"]
            cells += [_percent(row[key]) for key in ("clean", *names, "worst_case")]
            cells += [_count(row["nonzero"]), _count(row["macs"])]
            lines.append("| " + " | ".join(cells) + " |")
        s = self.settings
        norm = "L∞" if s.get("norm") == "linf" else "L2"
        lines.append("")
        lines.append(
            f"Accuracy (%) on {s.get('examples')} examples, {norm} eps = {s.get('eps'):g}; an example is robust "
            "to an attack only if it is also classified correctly clean; worst case = per example over every "
            f"attack. Randomness: {s.get('randomness', {}).get('mode', 'deterministic')}. Non-zeros and MACs: "
            "kernel weights and multiply-accumulates per example of the path each λ selects."
        )
        described = [_describe_attack(s["attacks"][name]) for name in names if name in s.get("attacks", {})]
        if described:
            lines.append("")
            lines.append("Attacks: " + "; ".join(described) + ".")
        if self.warnings:
            lines.append("")
            lines.append("**Warnings**")
            lines.extend(f"- {w}" for w in self.warnings)
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

        Example:
          >>> report.plot("frontier.png", baselines={"PGD-AT": (0.97, 0.88)})
        """
        if robust != "worst_case" and robust not in self.attacks:
            raise ValueError(
                f"`robust` must be 'worst_case' or one of the report's attacks {self.attacks}. Received: {robust!r}"
            )
        points = _baseline_points(baselines, robust)
        try:
            from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
            from matplotlib import figure  # pylint: disable=g-import-not-at-top
        except ImportError as e:
            raise ImportError(f"TradeoffReport.plot needs matplotlib: {_EXTRA}") from e

        fig = figure.Figure(figsize=(6.0, 4.5), dpi=120)
        backend_agg.FigureCanvasAgg(fig)  # draws without touching pyplot's global state
        ax = fig.add_subplot()
        clean = [100 * r["clean"] for r in self.rows]
        attacked = [100 * r[robust] for r in self.rows]
        label = self.settings.get("model", "model")
        if self.settings.get("method"):
            label += f", {self.settings['method']}"
        ax.plot(clean, attacked, "-o", color="tab:blue", label=label)
        for row, cx, cy in zip(self.rows, clean, attacked):
            label = "plain" if row["tradeoff"] is None else f"λ={row['tradeoff']:g}"
            ax.annotate(label, (cx, cy), textcoords="offset points", xytext=(6, 4), fontsize=8)
        markers = iter("sD^vP*Xh")
        for label, (bc, br) in points.items():
            ax.scatter([100 * bc], [100 * br], marker=next(markers, "o"), s=45, zorder=3, label=label)
        s = self.settings
        norm = "L∞" if s.get("norm") == "linf" else "L2"
        what = "worst case" if robust == "worst_case" else robust
        ax.set_xlabel("clean accuracy (%)")
        ax.set_ylabel(f"robust accuracy (%), {what}")
        ax.set_title(f"{norm} eps = {s.get('eps'):g}, {s.get('examples')} examples", fontsize=10)
        # At least 5 points wide: a 0.2-point difference in clean accuracy should look like one.
        xs = clean + [100 * bc for bc, _ in points.values()]
        middle, half = (max(xs) + min(xs)) / 2, max(2.5, (max(xs) - min(xs)) / 2 + 0.5)
        ax.set_xlim(max(0.0, middle - half) - 0.5, min(100.0, middle + half) + 1.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(str(path), format="png")
        return str(path)


def _describe_attack(settings):
    """A phrase for the Markdown report, e.g. "APGD-T (targeted DLR), 100 steps, 9 target classes"."""
    if "parts" in settings:
        return "AutoAttack = " + " then ".join(_describe_attack(part) for part in settings["parts"].values())
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


def _percent(value):
    return "—" if value is None else f"{100 * value:.1f}"


def _count(value):
    return "—" if value is None else f"{int(value):,}"


def _baseline_points(baselines, robust):
    if baselines is None:
        return {}
    if not isinstance(baselines, dict):
        raise TypeError(
            "`baselines` must be a dict {label: (clean, robust)} or {label: TradeoffReport}. "
            f"Received: {type(baselines).__name__}"
        )
    points = {}
    for label, value in baselines.items():
        if isinstance(value, TradeoffReport):
            row = value.rows[0]
            value = (row["clean"], row.get(robust, row["worst_case"]))
        try:
            clean, attacked = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(
                f"Baseline {label!r} must be (clean, robust) accuracies. Received: {value!r}"
            ) from None
        if not (0.0 <= clean <= 1.0 and 0.0 <= attacked <= 1.0):
            raise ValueError(
                f"Baseline {label!r} accuracies must be fractions in [0, 1] (not percentages). "
                f"Received: ({clean}, {attacked})"
            )
        points[str(label)] = (clean, attacked)
    return points


# --- attack names and options ----------------------------------------------------------------------


def _parse_attacks(names):
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise TypeError(
            f"`attacks` must be a sequence of attack names, e.g. ('fgsm', 'pgd20', 'autoattack'). Received: {names!r}"
        )
    parsed = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"Attack names must be strings. Received: {name!r} of type {type(name).__name__}")
        key = name.strip().lower()
        if not (key in ("fgsm", "apgd-ce", "apgd-dlr", "square", "autoattack") or re.fullmatch(r"pgd[1-9][0-9]*", key)):
            raise ValueError(
                f"Unknown attack {name!r}. Valid names: {', '.join(repr(n) for n in ATTACK_NAMES)}: 'pgd<K>' is "
                "K-step PGD (e.g. 'pgd20'), 'apgd-dlr' is targeted, 'autoattack' is APGD-CE + targeted APGD-DLR + "
                "Square, worst case per example."
            )
        if key in parsed:
            raise ValueError(f"Attack {key!r} is listed twice in `attacks`: {list(names)}")
        parsed.append(key)
    if not parsed:
        raise ValueError("`attacks` must name at least one attack, e.g. ('fgsm', 'pgd20', 'autoattack').")
    return parsed


def _components(names):
    """The attacks that actually run: pgd<K> stays itself, autoattack adds its three parts."""
    needed = [n for n in names if n != "autoattack"]
    if "autoattack" in names:
        needed += [c for c in AUTOATTACK if c not in needed]
    return needed


def _kind(name):
    return "pgd" if name.startswith("pgd") else name


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _parse_options(options):
    merged = {k: dict(v) for k, v in DEFAULT_ATTACK_OPTIONS.items()}
    if options is None:
        return merged
    if not isinstance(options, dict):
        raise TypeError(
            "`attack_options` must be a dict {attack: {option: value}}, e.g. {'apgd-ce': {'steps': 50}}. "
            f"Received: {type(options).__name__}"
        )
    for attack, values in options.items():
        if attack not in merged:
            raise ValueError(f"`attack_options` has settings for {sorted(merged)}. Received settings for {attack!r}")
        if not isinstance(values, dict):
            raise TypeError(f"`attack_options[{attack!r}]` must be a dict. Received: {values!r}")
        unknown = sorted(set(values) - set(merged[attack]))
        if unknown:
            raise ValueError(
                f"Unknown option(s) {unknown} for {attack!r}. Accepted: {sorted(merged[attack])}"
            )
        for key, value in values.items():
            if key == "p_init":
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value <= 1.0:
                    raise ValueError(f"`attack_options[{attack!r}]['p_init']` must be in (0, 1]. Received: {value!r}")
                merged[attack][key] = float(value)
            else:
                merged[attack][key] = _check_int(value, f"attack_options[{attack!r}][{key!r}]", 1)
    return merged


# --- data ------------------------------------------------------------------------------------------


def _input_shape(model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs is not None and len(inputs) != 1:
        raise ValueError(
            f"evaluate_tradeoff needs a model with one input; '{model.name}' has {len(inputs)}. Wrap the "
            "classifier you want evaluated in a single-input, single-output model."
        )
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if outputs is not None and len(outputs) != 1:
        raise ValueError(
            f"evaluate_tradeoff needs a model with one output (the logits); '{model.name}' has {len(outputs)}."
        )
    return None if not inputs else tuple(inputs[0].shape)


def _materialise(data, max_examples, input_shape):
    """(x float32 [N, ...], y as given) from arrays or a tf.data.Dataset of (x, y) (batches)."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise TypeError(
                "A tf.data.Dataset passed as `data` must yield (x, y) pairs (batches or single examples). "
                f"Received elements: {spec}"
            )
        if input_shape is not None and spec[0].shape.rank == len(input_shape) - 1:
            data = data.batch(256)  # single examples
        xs, ys, count = [], [], 0
        for xb, yb in data:
            xb, yb = np.asarray(xb), np.asarray(yb)
            xs.append(xb)
            ys.append(yb)
            count += len(xb)
            if max_examples is not None and count >= max_examples:
                break
        if not xs:
            raise ValueError("`data` is empty: the dataset yielded no batches. Pass at least one example.")
        x = np.concatenate(xs)
        y = np.concatenate(ys)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
    else:
        raise TypeError(
            "`data` must be a tf.data.Dataset of (x, y) batches or an (x, y) tuple of arrays. "
            f"Received: {type(data).__name__}" + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
        )
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"`data` is empty: received x of shape {x.shape}. Pass at least one example.")
    if len(y) != len(x):
        raise ValueError(f"`data` has {len(x)} inputs but {len(y)} labels.")
    if max_examples is not None:
        x, y = x[:max_examples], y[:max_examples]
    if input_shape is not None:
        expected = input_shape[1:]
        if len(x.shape) - 1 != len(expected) or any(e is not None and e != a for e, a in zip(expected, x.shape[1:])):
            raise ValueError(f"The model expects inputs of shape {(None, *expected)}; `data` holds {x.shape}.")
    return x.astype(np.float32), y


# --- the model under evaluation ------------------------------------------------------------------

# Counters that TF-MOT's wrappers keep among the weights: training state, not part of the function.
_FINGERPRINT_SKIPS = ("pruning_step", "optimizer_step")


def model_fingerprint(model):
    """A short hash (16 hex digits of a SHA-256) of the weights that make `model`'s function.

    Every weight in `model.weights` counts, in order, with its layer's name, its
    own name, shape and dtype: kernels, biases, masks, batch-norm statistics
    (both paths), noise scales, FiLM weights. Left out: the trade-off variable
    of any SmartModel in it (`evaluate_tradeoff` and `set_tradeoff` move it;
    the fingerprint does not depend on lam) and TF-MOT's step counters
    ("pruning_step", "optimizer_step"). Optimizer and metric state are not in
    `model.weights` in either Keras flavour. The same weights give the same
    fingerprint after a `.keras` save and load; pruning, fine-tuning, new masks
    or recalibrated batch-norm give another. Fingerprints are not comparable
    across Keras flavours (their weight orders differ).

    `evaluate_tradeoff` stores it in `report.settings["model_fingerprint"]`;
    `keras_smart.export.bundle` compares it with the model it exports.

    Args:
      model: a Keras model (SmartModel or plain).

    Returns:
      A string of 16 lowercase hex digits.

    Example:
      >>> keras_smart.evaluation.model_fingerprint(smart)
      '3f9c2a1b0d4e5f60'
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model_fingerprint` expects a keras.Model. Received: {type(model).__name__}")
    layers = _compat.flatten_layers(model)
    skipped = {id(m.tradeoff_variable) for m in (model, *layers) if isinstance(m, training.SmartModel)}
    owners = {}
    for layer in layers:  # outer before inner: the innermost layer names a weight
        for weight in layer.weights:
            owners[id(weight)] = layer.name
    digest = hashlib.sha256(b"keras_smart.model_fingerprint v1\n")
    for weight in model.weights:
        name = _compat.weight_name(weight)
        if id(weight) in skipped or name in _FINGERPRINT_SKIPS:
            continue
        value = np.ascontiguousarray(np.asarray(weight.numpy()))
        header = f"{owners.get(id(weight), '')}/{name}|{list(value.shape)}|{value.dtype.str}\n"
        digest.update(header.encode("utf-8"))
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def _noisy(model):
    return any(isinstance(l, ck.ConditionalKernel) and l.noisy for l in _compat.flatten_layers(model))


def _blends(model):
    return any(
        getattr(l, "tradeoff_mode", None) == config_lib.TradeoffMode.BLEND.value for l in _compat.flatten_layers(model)
    )


class _Forward:
    """The model as attacks see it: logits, batch-norm in inference mode, noise drawn or at its mean.

    `tradeoff` (a float) fixes the trade-off through `tradeoff_override`;
    None reads the model's trade-off variable. The scopes are read at trace
    time, so they wrap the call itself.
    """

    def __init__(self, model, tradeoff=None, expected_noise=False):
        self.model = model
        self.tradeoff = tradeoff
        self.expected_noise = expected_noise

    def __call__(self, x, training=False):
        with contextlib.ExitStack() as scopes:
            if self.tradeoff is not None:
                scopes.enter_context(base.tradeoff_override(self.tradeoff))
            if self.expected_noise:
                scopes.enter_context(base.expected_noise())
            return tf.cast(self.model(x, training=training), tf.float32)


def _path_counts(counts, lam, blend):
    """(non-zero kernel weights, MACs per example, path name) of the path lam selects."""
    if lam is None:
        return counts.adv, counts.macs_adv, "model"
    if lam == 0.0:
        return counts.clean, counts.macs_clean, "clean"
    if blend and lam < 1.0:
        # W * ((1 - lam) M_clean + lam M_adv) is non-zero wherever either mask is.
        macs = 0
        for row in counts.layers.values():
            if row["macs_dense"] is None:
                macs = None
                break
            macs += row["macs_dense"] // max(row["total"], 1) * row["union"]
        return counts.union, macs, "union"
    return counts.adv, counts.macs_adv, "adv"


# --- the sweep -------------------------------------------------------------------------------------


def _compile(fn, *input_signature):
    """`tf.function(fn)`, keyed for TensorFlow's retracing detector by a fresh object, not fn's code.

    Each evaluation builds its functions anew from the same code; keyed by code,
    TensorFlow would report them as one function "retracing" after a few evaluations.
    """
    wrapped = functools.partial(fn)
    if input_signature:
        return tf.function(wrapped, input_signature=list(input_signature))
    return tf.function(wrapped, reduce_retracing=True)


class _Sweep:
    """Runs the attacks for one evaluation: compiled functions shared by every trade-off row."""

    def __init__(self, model, x, labels, *, eps, norm, clip, batch_size, seed, options, expected_noise):
        self.model = model
        self.x = x
        self.labels = labels
        self.eps = eps
        self.norm = norm
        self.clip = clip
        self.batch_size = batch_size
        self.seed = seed
        self.options = options
        self.forward = _Forward(model, expected_noise=expected_noise)
        x_spec = tf.TensorSpec([None, *x.shape[1:]], tf.float32)
        y_spec = tf.TensorSpec([None], tf.int64)
        self._specs = (x_spec, y_spec)
        self._predict = _compile(lambda t: self.forward(t), x_spec)
        self._compiled = {}

    # batches ---------------------------------------------------------------------------------------

    def _chunks(self, index):
        for start in range(0, len(index), self.batch_size):
            yield index[start : start + self.batch_size]

    def logits(self, index):
        out = [self._predict(tf.constant(self.x[c])).numpy() for c in self._chunks(index)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def predictions(self, x):
        out = [np.argmax(self._predict(tf.constant(x[s : s + self.batch_size])).numpy(), -1)
               for s in range(0, len(x), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0,), np.int64)

    # compiled attacks --------------------------------------------------------------------------------

    def attack_config(self, name):
        """The `AttackConfig` of "fgsm", "pgd<K>" or "large-eps" (PGD-20 at `large_eps()`)."""
        lo, hi = self.clip
        if name == "fgsm":
            return config_lib.AttackConfig(kind="fgsm", eps=self.eps, norm=self.norm, clip_min=lo, clip_max=hi)
        if name == "large-eps":
            return config_lib.AttackConfig(
                kind="pgd", eps=self.large_eps(), steps=LARGE_EPS_STEPS, norm=self.norm, clip_min=lo, clip_max=hi
            )
        steps = int(name[3:])
        return config_lib.AttackConfig(kind="pgd", eps=self.eps, steps=steps, norm=self.norm, clip_min=lo, clip_max=hi)

    def _attack_fn(self, name, eot):
        """The compiled in-graph attack: f(x, y) -> x_adv (for "apgd-dlr": f(x, y, target) -> x_adv)."""
        key = (name, eot)
        if key in self._compiled:
            return self._compiled[key]
        x_spec, y_spec = self._specs
        lo, hi = self.clip
        shared = {"clip_min": lo, "clip_max": hi, "seed": self.seed, "eot_samples": eot}
        specs = (x_spec, y_spec)
        if name == "apgd-ce":
            steps = self.options["apgd-ce"]["steps"]

            def attack(x, y):
                return attacks_lib.apgd(self.forward, x, y, eps=self.eps, steps=steps, norm=self.norm, **shared)

        elif name == "apgd-dlr":
            steps = self.options["apgd-dlr"]["steps"]
            specs = (x_spec, y_spec, y_spec)

            def attack(x, y, target):
                return attacks_lib.apgd(
                    self.forward, x, y, eps=self.eps, steps=steps, norm=self.norm, loss="dlr", target=target, **shared
                )

        elif name == "square":
            square = self.options["square"]

            def attack(x, y):
                return attacks_lib.square(
                    self.forward, x, y, eps=self.eps, queries=square["queries"], p_init=square["p_init"], **shared
                )

        else:  # fgsm, pgd<K>, large-eps
            config = self.attack_config(name)

            def attack(x, y):
                return attacks_lib.run(config, self.forward, x, y, seed=self.seed, eot_samples=eot)

        self._compiled[key] = _compile(attack, *specs)
        return self._compiled[key]

    # running attacks ---------------------------------------------------------------------------------

    def run_row(self, names, components, eot, row, step):
        """Clean correctness and {attack: per-example correctness} at the model's current trade-off.

        Listed attacks run on every clean-correct example; autoattack's parts
        that are not listed run in order on what the earlier parts left robust
        (as "autoattack:<part>"), and "autoattack" is the per-example conjunction.
        `step(what)` is called after each stage (progress).
        """
        clean = np.argmax(self.logits(np.arange(len(self.x))), -1) == self.labels
        step("clean")
        results = {}
        for name in components:
            if name in AUTOATTACK and name not in names:
                continue  # runs inside autoattack, on the survivors
            results[name] = self.attack(name, clean, eot, row)
            step(name)
        if "autoattack" in names:
            chain = clean.copy()
            for part in AUTOATTACK:
                if part not in results:
                    results[f"autoattack:{part}"] = self.attack(part, chain, eot, row)
                    step(f"autoattack:{part}")
                chain &= results.get(part, results.get(f"autoattack:{part}"))
            results["autoattack"] = chain
        return clean, results

    def attack(self, name, mask, eot, row):
        """Per-example correctness after `name`, on the examples in `mask` (False elsewhere).

        Each restart attacks only the examples still classified correctly.
        """
        if name == "apgd-dlr":
            return self._targeted(mask, eot)
        correct = mask.copy()
        if name == "square" and self.norm == config_lib.Norm.L2:
            return self._art_square(np.flatnonzero(mask), eot, row, correct)
        fn = self._attack_fn(name, eot)
        restarts = self.options[_kind(name)]["restarts"] if _kind(name) in self.options else 1
        for _ in range(restarts):
            for chunk in self._chunks(np.flatnonzero(correct)):
                x_adv = fn(tf.constant(self.x[chunk]), tf.constant(self.labels[chunk])).numpy()
                correct[chunk] = self.predictions(x_adv) == self.labels[chunk]
        return correct

    def _targeted(self, mask, eot):
        """AutoAttack's APGD-T: a targeted DLR run per top-ranked wrong class, on the still-robust examples."""
        fn = self._attack_fn("apgd-dlr", eot)
        settings = self.options["apgd-dlr"]
        correct = mask.copy()
        index = np.flatnonzero(mask)
        if not len(index):
            return correct
        logits = self.logits(index)
        classes = logits.shape[-1]
        ranking = np.full((len(self.x), classes), -1, np.int64)
        ranking[index] = np.argsort(-logits, axis=-1, kind="stable")
        for _ in range(settings["restarts"]):
            for rank in range(1, min(settings["target_classes"], classes - 1) + 1):
                for chunk in self._chunks(np.flatnonzero(correct)):
                    x_adv = fn(
                        tf.constant(self.x[chunk]), tf.constant(self.labels[chunk]), tf.constant(ranking[chunk, rank])
                    ).numpy()
                    correct[chunk] = self.predictions(x_adv) == self.labels[chunk]
        return correct

    def _art_square(self, index, eot, row, correct):
        """L2 Square through IBM ART's SquareAttack (ours is L-inf only), on the examples in `index`."""
        if not len(index):
            return correct
        square_attack = _import_art("art.attacks.evasion", "SquareAttack")
        settings = self.options["square"]
        classes = int(self._predict(tf.constant(self.x[:1])).shape[-1])
        estimator = _classifier(
            self.forward, nb_classes=classes, input_shape=tuple(self.x.shape[1:]), clip_values=self.clip,
            batch_size=self.batch_size,
        )
        loss = None
        if eot > 1:

            def loss(x, y_onehot):
                # EOT for a gradient-free attack: the margin of the mean of `eot` draws.
                logits = np.mean([estimator.predict(x, batch_size=self.batch_size) for _ in range(eot)], axis=0)
                true = np.argmax(y_onehot, axis=1)
                correct_logit = logits[np.arange(len(x)), true]
                logits[np.arange(len(x)), true] = -np.inf
                return correct_logit - logits.max(axis=1)

        attack = square_attack(
            estimator, norm=2, eps=self.eps, max_iter=settings["queries"], p_init=settings["p_init"],
            nb_restarts=settings["restarts"], batch_size=self.batch_size, verbose=False, loss=loss,
        )
        onehot = np.eye(classes, dtype=np.float32)[self.labels[index]]
        state = np.random.get_state()  # ART draws from NumPy's global generator: seed it, then restore it
        np.random.seed((self.seed * 7919 + row) % 2**32)
        try:
            x_adv = attack.generate(self.x[index], onehot)
        finally:
            np.random.set_state(state)
        correct[index] = self.predictions(x_adv) == self.labels[index]
        return correct

    def large_eps_accuracy(self, clean, eot, row):
        """Accuracy under PGD-20 at a budget that reaches one common input (the middle of the range) from any input."""
        return float(self.attack("large-eps", clean, eot, row).mean())

    def large_eps(self):
        half = 0.5 * (self.clip[1] - self.clip[0])
        if self.norm == config_lib.Norm.LINF:
            return max(half, self.eps)
        return max(half * math.sqrt(float(np.prod(self.x.shape[1:]))), self.eps)


# --- costs and settings ----------------------------------------------------------------------------


def _attack_settings(name, eps, norm, options, eot, classes, clip):
    """The settings and the cost (forward and backward passes per attacked example, at most) of one attack."""
    common = {"eps": eps, "norm": norm.value, "eot_samples": eot}
    if name == "fgsm":
        return {**common, "attack": "FGSM", "implementation": "keras_smart.attacks.fgsm (in-graph)", "steps": 1,
                "step_size": eps, "random_start": False, "restarts": 1,
                "forward_passes": eot + 1, "gradient_passes": eot}
    if name.startswith("pgd"):
        steps = int(name[3:])
        restarts = options["pgd"]["restarts"]
        return {**common, "attack": f"PGD-{steps}", "implementation": "keras_smart.attacks.pgd (in-graph)",
                "steps": steps, "step_size": 2.5 * eps / steps, "random_start": True, "restarts": restarts,
                "forward_passes": restarts * (steps * eot + 1), "gradient_passes": restarts * steps * eot}
    if name in ("apgd-ce", "apgd-dlr"):
        o = options[name]
        targets = 1 if name == "apgd-ce" else min(o["target_classes"], classes - 1)
        per_run = (o["steps"] + 1) * eot
        settings = {**common, "attack": "APGD-CE" if name == "apgd-ce" else "APGD-T (targeted DLR)",
                    "implementation": "keras_smart.attacks.apgd (in-graph, Croce & Hein 2020)",
                    "loss": "cross-entropy" if name == "apgd-ce" else "targeted DLR",
                    "steps": o["steps"], "step_size": "2*eps, halved per example at the checkpoints",
                    "momentum": 0.75, "rho": 0.75, "random_start": True, "restarts": o["restarts"]}
        if name == "apgd-dlr":
            settings["target_classes"] = targets
        settings["forward_passes"] = o["restarts"] * targets * (per_run + 1) + (name == "apgd-dlr")
        settings["gradient_passes"] = o["restarts"] * targets * per_run
        return settings
    if name == "square":
        o = options["square"]
        settings = {**common, "attack": "Square (margin loss, untargeted)", "queries": o["queries"],
                    "p_init": o["p_init"], "restarts": o["restarts"], "gradient_passes": 0}
        if norm == config_lib.Norm.LINF:
            settings["implementation"] = "keras_smart.attacks.square (in-graph; per-example windows as the reference)"
            settings["forward_passes"] = o["restarts"] * (o["queries"] * eot + 1)
        else:
            # ART: per restart one prediction and two losses, then per query one prediction and two losses.
            settings["implementation"] = f"IBM ART SquareAttack ({_art_version()})"
            settings["forward_passes"] = o["restarts"] * (o["queries"] + 1) * (1 + 2 * eot) + 1
        return settings
    parts = {c: _attack_settings(c, eps, norm, options, eot, classes, clip) for c in AUTOATTACK}
    return {**common, "attack": "AutoAttack (standard: APGD-CE, APGD-T, Square)",
            "components": list(AUTOATTACK),
            "parts": parts,
            "note": "each part attacks only the examples the earlier parts left robust; per example worst case",
            "forward_passes": sum(p["forward_passes"] for p in parts.values()),
            "gradient_passes": sum(p["gradient_passes"] for p in parts.values())}


def _art_version():
    try:
        import art  # pylint: disable=g-import-not-at-top
    except ImportError:
        return "not installed"
    return f"adversarial-robustness-toolbox {art.__version__}"


# --- gradient-masking checks -----------------------------------------------------------------------


def _order_pairs(names, options):
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
    """
    findings = []
    for weaker, stronger in _order_pairs(names, options):
        if accuracies[stronger] > accuracies[weaker] + ORDER_TOLERANCE:
            findings.append(
                f"{label}: {stronger} reports a higher accuracy ({_percent(accuracies[stronger])}%) than the weaker "
                f"{weaker} ({_percent(accuracies[weaker])}%). A stronger attack should never do worse: the loss "
                "surface may be masking gradients (non-differentiable or saturated layers, randomness without EOT)."
            )
    if broken_by_square_only is not None and broken_by_square_only > GRADIENT_FREE_MARGIN:
        findings.append(
            f"{label}: the gradient-free Square attack broke {_percent(broken_by_square_only)}% of the examples that "
            "every gradient attack left robust. Gradient-based accuracy is then overstated: the model is likely "
            "masking gradients; trust the worst case (or autoattack) number."
        )
    if large_eps is not None:
        eps, accuracy, chance = large_eps
        if accuracy > chance + LARGE_EPS_MARGIN:
            findings.append(
                f"{label}: at eps = {eps:g}, a budget that can turn every input into the same image, PGD-"
                f"{LARGE_EPS_STEPS} still leaves {_percent(accuracy)}% accuracy (chance: {_percent(chance)}%). "
                "Attacks that cannot reach chance at an unbounded budget are failing: gradients are likely masked."
            )
    findings += _weak_pgd_findings(label, accuracies, names, worst_case)
    return findings


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


# --- IBM ART ---------------------------------------------------------------------------------------


def _import_art(module, name):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ART warns that PyTorch is missing
            imported = __import__(module, fromlist=[name])
        return getattr(imported, name)
    except ImportError as e:
        raise ImportError(
            f"This needs IBM's Adversarial Robustness Toolbox ({module}.{name}): {_EXTRA} "
            "(or pip install adversarial-robustness-toolbox)."
        ) from e


@functools.lru_cache(maxsize=None)
def _classifier_class():
    base_class = _import_art("art.estimators.classification", "TensorFlowV2Classifier")

    class KerasSmartClassifier(base_class):
        """ART's TensorFlowV2Classifier around a keras_smart model at a fixed trade-off.

        `predict` runs in batches through one `tf.function` (ART's own runs the
        whole array at once and retraces per shape).
        """

        def __init__(self, model, *, batch_size=256, **kwargs):
            super().__init__(model=model, **kwargs)
            self._predict_batch_size = batch_size
            self._predict_fn = _compile(lambda t, training: model(t, training=training))

        def predict(self, x, batch_size=None, training_mode=False, **kwargs):
            del kwargs
            x_preprocessed, _ = self._apply_preprocessing(x, y=None, fit=False)
            size = batch_size or self._predict_batch_size
            outputs = [
                self._predict_fn(tf.constant(x_preprocessed[s : s + size], tf.float32), bool(training_mode)).numpy()
                for s in range(0, len(x_preprocessed), size)
            ]
            predictions = np.concatenate(outputs) if outputs else np.zeros((0, self.nb_classes), np.float32)
            return self._apply_postprocessing(preds=predictions, fit=False)

    return KerasSmartClassifier


def _classifier(forward, *, nb_classes, input_shape, clip_values, batch_size):
    return _classifier_class()(
        forward,
        nb_classes=nb_classes,
        input_shape=input_shape,
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=tuple(float(c) for c in clip_values),
        batch_size=batch_size,
    )


def as_art_classifier(model, tradeoff=None, *, noise="sample", clip_values=(0.0, 1.0), batch_size=256):
    """An IBM ART `TensorFlowV2Classifier` of `model` fixed at one trade-off, for any ART attack.

    The trade-off is fixed inside the classifier (`tradeoff_override`), so a
    later `set_tradeoff` on the model does not move it. Batch-norm runs in
    inference mode; the loss is cross-entropy from logits. Works with both Keras
    flavours.

    Args:
      model: a SmartModel, or a plain Keras classifier (one input; logits out).
      tradeoff: lam in [0, 1] for a SmartModel (None: its current trade-off);
        must be None for a plain model.
      noise: for noisy methods (float, floats, SMART's noise mode): "sample"
        (fresh noise on every call, as trained) or "expected" (noise at its
        mean: what `strip` and export compute).
      clip_values: the valid input range (min, max).
      batch_size: batch size of `predict`.

    Returns:
      An `art.estimators.classification.TensorFlowV2Classifier` (subclass).

    Raises:
      ImportError: ART is not installed (`pip install keras_smart[eval]`).
      TypeError / ValueError: not a Keras model, a trade-off for a plain model,
        a bad trade-off, noise mode or input shape.

    Example:
      >>> from art.attacks.evasion import SquareAttack
      >>> classifier = keras_smart.evaluation.as_art_classifier(smart, tradeoff=1.0)
      >>> x_adv = SquareAttack(classifier, eps=0.3, max_iter=1000).generate(x_test)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`as_art_classifier` expects a keras.Model. Received: {type(model).__name__}")
    noise = _check_noise(noise)
    if isinstance(model, training.SmartModel):
        tradeoff = float(model.tradeoff_variable.numpy()) if tradeoff is None else config_lib.check_tradeoff(
            tradeoff, "tradeoff"
        )
    elif tradeoff is not None:
        raise ValueError(
            f"Model '{model.name}' is a plain Keras model: it has no trade-off. Pass tradeoff=None (or convert "
            "it with keras_smart.convert first)."
        )
    shape = _input_shape(model)
    if shape is None or any(d is None for d in shape[1:]):
        raise ValueError(f"`as_art_classifier` needs a model with a fully defined input shape. Received: {shape}")
    lo, hi = (float(c) for c in clip_values)
    if not lo < hi:
        raise ValueError(f"`clip_values` must be (min, max) with min < max. Received: {clip_values!r}")
    _check_int(batch_size, "batch_size", 1)
    forward = _Forward(model, tradeoff=tradeoff, expected_noise=noise == "expected")
    classes = int(forward(tf.zeros((1, *shape[1:]))).shape[-1])
    return _classifier(forward, nb_classes=classes, input_shape=tuple(shape[1:]), clip_values=(lo, hi),
                       batch_size=batch_size)


# --- evaluate_tradeoff -----------------------------------------------------------------------------


def _check_noise(noise):
    if noise not in ("sample", "expected"):
        raise ValueError(
            "`noise` must be 'sample' (noisy methods draw fresh weight noise on every call, as trained) or "
            f"'expected' (noise at its mean, what strip/export compute). Received: noise={noise!r}"
        )
    return noise


def _check_lambdas(lambdas, smart):
    if lambdas is None:
        return list(DEFAULT_LAMBDAS) if smart else [None]
    if isinstance(lambdas, (str, bytes)) or not hasattr(lambdas, "__iter__"):
        raise TypeError(f"`lambdas` must be a sequence of numbers in [0, 1]. Received: lambdas={lambdas!r}")
    values = sorted({config_lib.check_tradeoff(v, "lambdas[i]") for v in lambdas})
    if not values:
        raise ValueError("`lambdas` is empty: pass at least one trade-off in [0, 1], or None for the default grid.")
    if not smart:
        raise ValueError(
            "A plain Keras model has no trade-off: pass lambdas=None (one row). To sweep lam, convert the model "
            "with keras_smart.convert and train it once-for-all."
        )
    return values


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"`eps` must be a positive number. Received: eps={eps!r}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"`eps` must be a finite number > 0 (the attack budget). Received: eps={eps}")
    return float(eps)


class _Progress:
    """tqdm when available and wanted; otherwise a log line per step (absl.logging)."""

    def __init__(self, total, enabled):
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import auto  # pylint: disable=g-import-not-at-top

                self.bar = auto.tqdm(total=total, desc="evaluate_tradeoff", unit="step")
            except ImportError:
                self.bar = None

    def step(self, what):
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            logging.info("evaluate_tradeoff: %s done", what)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def evaluate_tradeoff(
    model,
    data,
    *,
    lambdas=None,
    attacks=("fgsm", "pgd20", "autoattack"),
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
    (IBM ART, 5,000 queries) on what survives; its accuracy is the per-example
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

    Randomised models (float, floats, SMART's noise mode at lam > 0) draw fresh
    noise on every forward pass. `noise="sample"` evaluates them as trained: the
    TensorFlow global seed is set to `seed` (the whole evaluation reproduces),
    and with `eot_samples` = k > 1 every attack gradient (and Square's loss) is
    the mean over k draws (expectation over transformation); k = 1 is a fixed
    seed without EOT. `noise="expected"` evaluates the deterministic model with
    noise at its mean (what `strip` and export compute).

    Args:
      model: a SmartModel, or a plain Keras classifier (one input, logits out;
        evaluated once, as one row with "tradeoff": None).
      data: a `tf.data.Dataset` of (x, y) batches (or single examples), or an
        (x, y) tuple of arrays. Labels: integer ids or one-hot rows. Inputs must
        lie in `input_range`. The (first `max_examples`) examples are held in memory.
      lambdas: trade-offs to evaluate (each in [0, 1]); None: (0, 0.2, 0.4, 0.6,
        0.8, 1) for a SmartModel, one row for a plain model (for which any other
        value is an error).
      attacks: names from "fgsm", "pgd<K>" (K steps, step 2.5*eps/K, random
        start), "apgd-ce", "apgd-dlr" (targeted APGD-DLR), "square", "autoattack".
      eps: the perturbation budget (> 0), in input units; below the width of
        `input_range` (L-inf) or sqrt(d) times it (L2).
      norm: "linf" or "l2".
      max_examples: evaluate only the first this many examples (None: all).
      batch_size: examples per attack batch.
      seed: op seed of the random starts and Square's draws; for a randomised
        model also TensorFlow's global seed (so the weight noise reproduces).
      eot_samples: None (`DEFAULT_EOT_SAMPLES` = 4 for randomised rows, 1
        otherwise) or an int >= 1 (1: a fixed seed without EOT).
      noise: "sample" or "expected" (see above).
      attack_options: overrides of `DEFAULT_ATTACK_OPTIONS`, e.g.
        {"apgd-ce": {"steps": 50}, "square": {"queries": 1000}}; they also apply
        inside "autoattack".
      input_range: (min, max) of valid inputs; adversarial inputs are clipped to it.
      progress: show a progress bar (tqdm; a log line per step without it).

    Returns:
      A `TradeoffReport`, with `settings["model_fingerprint"]` =
      `model_fingerprint(model)` (what `keras_smart.export.bundle` checks).
      The model's trade-off is what it was before the call (also when the
      evaluation fails).

    Raises:
      TypeError / ValueError: before any attack runs, for a model that is not a
        one-input, one-output Keras model; lambdas outside [0, 1] (or any for a
        plain model); an unknown attack name (the message lists the valid
        ones); eps <= 0, or eps that reaches every input (L-inf: eps >=
        max - min of `input_range`; L2: eps >= sqrt(d) * (max - min), d the
        values per example; see `keras_smart.config.check_eps`); empty data;
        inputs outside `input_range`; labels that do not match the model's
        classes; bad options.
      ImportError: "square" or "autoattack" with norm="l2" without IBM ART
        (`pip install keras_smart[eval]`).

    Example:
      >>> report = keras_smart.evaluate_tradeoff(smart, (x_test, y_test), eps=0.3)
      >>> print(report.to_markdown())
      >>> report.plot("frontier.png")
    """
    started = time.time()
    if not isinstance(model, keras.Model):
        raise TypeError(f"`evaluate_tradeoff` expects a keras.Model. Received: {type(model).__name__}")
    smart = isinstance(model, training.SmartModel)
    lambdas = _check_lambdas(lambdas, smart)
    names = _parse_attacks(attacks)
    eps = _check_eps(eps)
    norm = config_lib.coerce_enum(config_lib.Norm, norm, "norm")
    if max_examples is not None:
        max_examples = _check_int(max_examples, "max_examples", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`seed` must be an int. Received: seed={seed!r}")
    if eot_samples is not None:
        eot_samples = attacks_common.check_eot_samples(eot_samples)
    noise = _check_noise(noise)
    options = _parse_options(attack_options)
    try:
        lo, hi = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise TypeError(f"`input_range` must be (min, max). Received: {input_range!r}") from None
    if not lo < hi:
        raise ValueError(f"`input_range` must be (min, max) with min < max. Received: {input_range!r}")
    input_shape = _input_shape(model)
    known = input_shape is not None and all(d is not None for d in input_shape[1:])
    # The rule AttackConfig applies (L2: sqrt(d) * range, once d is known), before any data is read.
    config_lib.check_eps(
        eps, norm, lo, hi, int(np.prod(input_shape[1:])) if known else None, range_fix="pass input_range=(0, 255)"
    )
    components = _components(names)
    if "square" in components and norm == config_lib.Norm.L2:
        _import_art("art.attacks.evasion", "SquareAttack")  # fail now, not after the gradient attacks

    x, y = _materialise(data, max_examples, input_shape)
    if not known:
        config_lib.check_eps(eps, norm, lo, hi, int(np.prod(x.shape[1:])), range_fix="pass input_range=(0, 255)")
    labels_lib.class_ids(y)  # malformed labels fail before any forward pass
    if x.min() < lo - 1e-6 or x.max() > hi + 1e-6:
        raise ValueError(
            f"Inputs must lie in input_range={(lo, hi)} (attacks clip to it); `data` spans "
            f"[{x.min():g}, {x.max():g}]. Scale the inputs (normalise inside the model) or pass input_range."
        )
    if "square" in components and x.ndim != 4:
        raise ValueError(
            f"The Square attack (also part of 'autoattack') perturbs images [N, height, width, channels]; the "
            f"inputs have shape {x.shape}. Leave out 'square' and 'autoattack' for non-image inputs."
        )
    probe = _Forward(model, expected_noise=True)(tf.constant(x[: min(len(x), 8)]))
    if probe.shape.rank != 2:
        raise ValueError(f"The model must output logits [batch, classes]; it outputs shape {probe.shape}.")
    classes = int(probe.shape[-1])
    labels = labels_lib.class_ids(y, classes)
    if "apgd-dlr" in components and classes < 4:
        raise ValueError(
            f"Targeted APGD-DLR (also part of 'autoattack') needs at least 4 classes; the model has {classes}. "
            "Use attacks such as ('fgsm', 'pgd20', 'apgd-ce', 'square')."
        )
    report_warnings = []
    values = probe.numpy()
    if np.all(values >= 0) and np.all(values <= 1) and np.allclose(values.sum(-1), 1.0, atol=1e-3):
        report_warnings.append(
            "The model's outputs look like probabilities (in [0, 1], rows summing to 1): the attacks expect "
            "logits, and a softmax output saturates their gradients. Evaluate the model without its softmax."
        )

    fingerprint = model_fingerprint(model)  # the state measured (the trade-off excluded: the sweep moves it)
    noisy = _noisy(model) and noise == "sample"
    blend = _blends(model)
    counts = masks.count_nonzero(model)
    chance = float(np.bincount(labels, minlength=classes).max() / len(labels))

    def eot_for(lam):
        randomised = noisy and (lam is None or lam > 0)
        if not randomised:
            return 1
        return DEFAULT_EOT_SAMPLES if eot_samples is None else eot_samples

    sweep = _Sweep(
        model, x, labels, eps=eps, norm=norm, clip=(lo, hi), batch_size=batch_size, seed=int(seed),
        options=options, expected_noise=noise == "expected",
    )
    previous = float(model.tradeoff_variable.numpy()) if smart else None
    steps_per_row = 2 + len(components)
    bar = _Progress(len(lambdas) * steps_per_row, progress)
    rows, paths, large_eps, randomised_rows = [], {}, {}, []
    try:
        if noisy:
            tf.random.set_seed(int(seed))  # the weight noise has no op seed of its own unless convert got one
        for row_index, lam in enumerate(lambdas):
            label = "model" if lam is None else f"λ={lam:g}"
            if smart:
                model.tradeoff_variable.assign(lam)
            eot = eot_for(lam)
            if noisy and (lam is None or lam > 0):
                randomised_rows.append(lam)

            def step(what, label=label):
                bar.step(f"{label} {what}")

            clean, results = sweep.run_row(names, components, eot, row_index, step)
            worst = clean.copy()
            for name in names:
                worst &= results[name]
            gradient_robust = clean.copy()
            for key, correct in results.items():
                if _kind(key.split(":")[-1]) in GRADIENT_ATTACKS:
                    gradient_robust &= correct
            square = results.get("square", results.get("autoattack:square"))
            broken_by_square = None if square is None else float(np.mean(gradient_robust & ~square))

            accuracy_large = sweep.large_eps_accuracy(clean, eot, row_index)
            bar.step(f"{label} large-eps check")
            key = "model" if lam is None else f"{lam:g}"
            large_eps[key] = accuracy_large

            accuracies = {name: float(results[name].mean()) for name in names}
            report_warnings += masking_findings(
                label, accuracies, names, options, broken_by_square, (sweep.large_eps(), accuracy_large, chance),
                worst_case=float(worst.mean()),
            )
            nonzero, macs, path = _path_counts(counts, lam, blend)
            paths[key] = path
            rows.append(
                {
                    "tradeoff": lam,
                    "clean": float(clean.mean()),
                    **accuracies,
                    "worst_case": float(worst.mean()),
                    "nonzero": None if nonzero is None else int(nonzero),
                    "macs": None if macs is None else int(macs),
                }
            )
    finally:
        bar.close()
        if smart:
            model.tradeoff_variable.assign(previous)

    if noise == "expected" and _noisy(model):
        randomness = {"mode": "expected_noise", "note": "weight noise at its mean (what strip/export compute)"}
    elif not randomised_rows:
        randomness = {"mode": "deterministic"}
    else:
        eot = eot_for(1.0)
        randomness = {
            "mode": "eot" if eot > 1 else "fixed_seed",
            "eot_samples": eot,
            "seed": int(seed),
            "randomised_rows": randomised_rows,
            "note": (
                "fresh weight noise on every forward pass; TensorFlow's global seed set to `seed`; "
                + (f"each attack gradient (and Square's loss) averaged over {eot} draws; " if eot > 1 else "")
                + "accuracies from one draw per example"
            ),
        }
    settings = {
        "model": model.name,
        "model_fingerprint": fingerprint,
        "method": _method(model) if smart else "plain",
        "keras": _compat.FLAVOUR,
        "examples": int(len(x)),
        "classes": classes,
        "chance": chance,
        "eps": eps,
        "norm": norm.value,
        "input_range": [lo, hi],
        "batch_norm": "inference",
        "lambdas": None if not smart else [float(v) for v in lambdas],
        "attack_names": names,
        "attacks": {
            name: _attack_settings(name, eps, norm, options, eot_for(1.0), classes, (lo, hi)) for name in names
        },
        "robust_means": "classified correctly clean and on the attack's output (the attacker may submit x itself)",
        "worst_case": "per example, over clean and every attack listed",
        "randomness": randomness,
        "counts": {
            "nonzero": "non-zero kernel weights (conv/dense) of the path the trade-off selects",
            "macs": "multiply-accumulates per example of that path (conv/dense kernels)",
            "paths": paths,
            "total_weights": counts.total,
            "conditioning_weights": counts.conditioning,
        },
        "masking_checks": {
            "order_tolerance": ORDER_TOLERANCE,
            "gradient_free_margin": GRADIENT_FREE_MARGIN,
            "weak_attack_margin": WEAK_ATTACK_MARGIN,
            "large_eps": {"eps": sweep.large_eps(), "steps": LARGE_EPS_STEPS, "margin": LARGE_EPS_MARGIN,
                          "accuracy": large_eps},
        },
        "seed": int(seed),
        "seconds": round(time.time() - started, 1),
    }
    for sentence in report_warnings:
        warnings.warn(sentence, GradientMaskingWarning, stacklevel=2)
    return TradeoffReport(settings=settings, rows=tuple(rows), warnings=tuple(report_warnings))


def _method(model):
    kinds = set()
    for layer in model.conditional_layers():
        if isinstance(layer, ck.ConditionalKernel):
            if getattr(layer, "tradeoff_mode", None):
                kinds.add(f"smart ({layer.tradeoff_mode})")
            else:
                kinds.add("floats" if layer.mask_kind else "float")
        elif type(layer).__name__.startswith("FiLM"):
            kinds.add("oat")
    return ", ".join(sorted(kinds)) or "smart"
