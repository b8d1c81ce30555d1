"""What a bundle's `smart.json` says: the signature, each file and its check, and the measured accuracies."""

import hashlib
import json
import warnings

from keras_smart import _compat
from keras_smart import evaluation
from keras_smart import registry
from keras_smart import version
from keras_smart.export import macs as macs_lib
from keras_smart.export.result import INPUT_NAME
from keras_smart.export.result import TRADEOFF_NAME

BUNDLE_METADATA = "smart.json"
BUNDLE_LABELS = "labels.txt"
RUNTIME_FILE = "model.tflite"


def bundle_file(tradeoff):
    """The name of the file baked at `tradeoff`, e.g. "tradeoff_040.tflite" for 0.4."""
    return f"tradeoff_{round(100 * tradeoff):03d}.tflite"


def stage_file(tradeoff, stage):
    """The name of a staged bundle's stage file: "tradeoff_040_stage2.tflite" (a plain model: "stage2.tflite")."""
    return f"stage{stage}.tflite" if tradeoff is None else f"tradeoff_{round(100 * tradeoff):03d}_stage{stage}.tflite"


def report_rows(report):
    """The report as a plain, JSON-safe dict with a "rows" list (or None)."""
    if report is None:
        return None
    if hasattr(report, "to_json"):
        report = report.to_json()
    if isinstance(report, str):
        report = json.loads(report)
    if not isinstance(report, dict) or not isinstance(report.get("rows"), list):
        raise TypeError(
            "`report` must be a TradeoffReport (with to_json()) or a dict with a 'rows' list of "
            f"{{'tradeoff': t, 'clean': acc, ...}}. Received: {type(report).__name__}"
        )
    for row in report["rows"]:
        if not isinstance(row, dict) or "tradeoff" not in row:
            raise ValueError(f"Every report row needs a 'tradeoff'. Received row: {row!r:.120}")
    return json.loads(json.dumps(report))


def check_report_measured(model, report):
    """Refuses a report measured on other weights than `model`'s; warns when it cannot tell.

    Called by `bundle` itself: the warning points at `bundle`'s caller.
    """
    settings = report.get("settings")
    measured = settings.get("model_fingerprint") if isinstance(settings, dict) else None
    if measured is None:
        warnings.warn(
            "`report` has no model fingerprint (settings['model_fingerprint']: it was not made by "
            "keras_smart.evaluate_tradeoff, or by an older version), so bundle cannot check that it was measured "
            "on this model's weights, masks and pruning state; its accuracies and non-zero counts go into "
            f"{BUNDLE_METADATA} as given.",
            UserWarning,
            stacklevel=3,
        )
        return
    current = evaluation.model_fingerprint(model)
    if measured != current:
        raise ValueError(
            f"`report` was measured on different weights, masks or pruning state than the model being exported "
            f"(model fingerprint {measured!s} in the report, {current} now): the model changed after "
            "keras_smart.evaluate_tradeoff (pruned, fine-tuned, new masks or batch-norm statistics), so the "
            f"report's accuracies and non-zero counts would be stale in {BUNDLE_METADATA}. Re-run "
            "keras_smart.evaluate_tradeoff(model, ...) after pruning, or pass report=None."
        )


def metadata(model, exported, tradeoffs, rows, input_range, labels, runtime_tradeoff):
    """The contents of `smart.json`.

    Each file and each trade-off carries two MAC counts per example
    (`keras_smart.export.macs.file_macs`): "executed_macs", every kernel
    multiply-accumulate the file runs (LiteRT runs kernels dense: the
    exported, possibly compacted, model's dense count; for a runtime-trade-off
    file what it runs at any one trade-off), and "nonzero_macs", those with a
    non-zero weight (a baked file's kernels; for a runtime-trade-off file's
    trade-offs, the path each selects, as the report counts it; None for the
    runtime-trade-off file itself).

    Args:
      model: the exported model.
      exported: (file name, baked trade-off or None, ExportResult) per file.
      tradeoffs: the trade-offs the bundle offers.
      rows: `report_rows` of the report, or None.
      input_range: the (min, max) of the model's input values.
      labels: the class names.
      runtime_tradeoff: whether one file takes the trade-off as an input.
    """
    method = registry.method_of(model)
    results = {None if runtime_tradeoff else tradeoff: export for _, tradeoff, export in exported}
    nonzero = macs_lib.nonzero_macs(model, tradeoffs) if runtime_tradeoff else {}
    result = {
        "format": "keras_smart.bundle",
        "format_version": 1,
        "keras_smart_version": version.__version__,
        "keras_flavour": _compat.FLAVOUR,
        "model_name": model.name,
        "method": method.value if method else None,
        "signature": "serving_default",
        "input": _input_entry(exported[0][2], input_range),
        "output": {**exported[0][2].outputs[0], "kind": "logits"},
        "labels_file": BUNDLE_LABELS,
        "num_classes": len(labels),
        "runtime_tradeoff": bool(runtime_tradeoff),
        "tradeoffs": [
            {
                "tradeoff": tradeoff,
                "file": RUNTIME_FILE if runtime_tradeoff else bundle_file(tradeoff),
                "accuracy": _accuracy_at(rows, tradeoff),
                "executed_macs": results[None if runtime_tradeoff else tradeoff].executed_macs,
                "nonzero_macs": nonzero[tradeoff] if runtime_tradeoff else results[tradeoff].nonzero_macs,
            }
            for tradeoff in tradeoffs
        ],
        "files": [file_entry(name, tradeoff, export, rows, runtime_tradeoff) for name, tradeoff, export in exported],
    }
    if runtime_tradeoff:
        result["tradeoff_input"] = {"name": TRADEOFF_NAME, "shape": [1], "dtype": "float32", "range": [0.0, 1.0]}
    if rows is not None:
        result["report"] = rows
    return result


def _input_entry(export, input_range):
    entry = dict(next(tensor for tensor in export.inputs if tensor["name"] == INPUT_NAME))
    entry["value_range"] = list(input_range)
    entry["layout"] = "NHWC" if len(entry["shape"]) == 4 else None
    return entry


def file_entry(name, tradeoff, export, rows, runtime_tradeoff):
    """One file's entry in "files"; a runtime-trade-off file's accuracies and non-zero MACs are under
    "tradeoffs" instead."""
    entry = {
        "file": name,
        "tradeoff": tradeoff,
        "size_bytes": export.size_bytes,
        "executed_macs": export.executed_macs,
        "nonzero_macs": export.nonzero_macs,
        "sha256": _sha256(export.path),
        "quantize": export.quantize,
        "operators": list(export.ops),
        "check": {
            "max_abs_diff": export.max_abs_diff,
            "top1_agreement": export.agreement,
            "samples": export.check_samples,
        },
    }
    if rows is not None and not runtime_tradeoff:
        entry["accuracy"] = _accuracy_at(rows, tradeoff)
    return entry


def _accuracy_at(rows, tradeoff):
    """The report row measured at `tradeoff` (None: a plain model's row), without its "tradeoff" key."""
    if rows is None:
        return None
    for row in rows["rows"]:
        measured = row["tradeoff"]
        if tradeoff is None:
            same = measured is None
        else:
            same = measured is not None and abs(float(measured) - tradeoff) < 1e-6
        if same:
            return {k: v for k, v in row.items() if k != "tradeoff"}
    return None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
