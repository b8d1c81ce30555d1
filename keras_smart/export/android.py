"""bundle(): the directory an Android app loads: checked `.tflite` file(s), `labels.txt` and `smart.json`."""

import inspect
import json
import math
import os
import shutil

from keras_smart import _compat
from keras_smart import training
from keras_smart import validation
from keras_smart.export import files
from keras_smart.export import metadata as metadata_lib
from keras_smart.export import options as options_lib
from keras_smart.export import staged as staged_lib
from keras_smart.export import tflite as tflite_lib
from keras_smart.export.tflite import to_tflite

keras = _compat.keras


def bundle(
    model,
    out_dir,
    *,
    tradeoffs=None,
    labels=None,
    report=None,
    quantize=None,
    representative_data=None,
    runtime_tradeoff=False,
    input_range=(0.0, 1.0),
    overwrite=False,
    policy=None,
    compact="auto",
    **to_tflite_options,
):
    """Writes what an Android app needs: `.tflite` file(s), `labels.txt` and `smart.json`.

    Files (all checked by `to_tflite` before the directory appears):
    - one baked file per trade-off, `tradeoff_<round(100 * tradeoff):03d>.tflite`
      (e.g. `tradeoff_000.tflite`, `tradeoff_100.tflite`), or with
      `runtime_tradeoff=True` one file `model.tflite` whose second input
      "tradeoff" selects the trade-off; a plain Keras model gives one
      `model.tflite`;
    - `labels.txt`: one class name per line, in output order;
    - `smart.json`: input name, shape (batch -1), dtype and value range, output
      name and shape, each file with its trade-off, size, SHA-256, check
      numbers, executed MACs (every kernel multiply-accumulate the file runs,
      zeros included) and non-zero MACs (those of the path it serves, as the
      report counts them), and, with `report`, each trade-off's measured clean
      / robust accuracy.

    A multi-exit model (`keras_smart.exits.attach`) gives a staged bundle and
    needs `policy`: per trade-off, its single file above (the final exit only)
    and one file per stage, `tradeoff_<t>_stage<k>.tflite` (a plain model:
    `stage<k>.tflite`). Stage 1 maps the image ("input") to exit 1's logits
    ("output") and the features the next stage takes ("feature_<layer>", also
    tensors a residual carries past the cut); stage k > 1 maps those to exit
    k's logits and its own features; the last stage gives the final logits.
    smart.json's "staged" section lists, per trade-off, the stages in order
    (file, inputs, outputs, features, threshold, MACs and cumulative MACs),
    the policy's entropy thresholds and the rule: exit at the first stage
    whose softmax entropy (natural log) is below its threshold; the last stage
    always exits. The stages are checked chained in LiteRT, every exit against
    Keras. `runtime_tradeoff` and `int8_io` are refused.

    The bundle is assembled in a temporary directory beside `out_dir` and moved
    into place only when complete: a failure leaves nothing half-written.

    Args:
      model: a `SmartModel` (or a plain Keras model).
      out_dir: the bundle directory; it must not exist or be empty, unless
        `overwrite=True` (then it is replaced as a whole).
      tradeoffs: the trade-offs to offer, in [0, 1] (default (0.0, 1.0) for a
        SmartModel; sorted, repeats dropped). None or empty for a plain model.
      labels: class names (one per output unit); default "0", "1", ....
      report: a `keras_smart.evaluation.TradeoffReport` (anything with
        `to_json()`) or a dict shaped like its JSON: {"settings": ..., "rows":
        [{"tradeoff": t, "clean": acc, "<attack>": acc, "worst_case": acc, ...}],
        "warnings": [...]}. Its `settings["model_fingerprint"]` (what
        `evaluate_tradeoff` records: `keras_smart.evaluation.model_fingerprint`
        of the weights, masks and batch-norm statistics it measured, not the
        trade-off) must equal the fingerprint of `model`: a report measured
        before pruning, fine-tuning or new masks is refused (ValueError), so
        smart.json never carries stale accuracies or non-zero counts. A report
        without a fingerprint (made by other code, or an older keras_smart)
        cannot be checked: `bundle` warns (UserWarning) and uses it as given.
      quantize, representative_data: as in `to_tflite` (every file).
      runtime_tradeoff: one file with the trade-off as an input instead of one
        file per trade-off.
      input_range: the (min, max) of the model's input values, recorded for the app.
      overwrite: replace an existing non-empty `out_dir`.
      compact: as in `to_tflite`: "auto" (default) exports each baked
        trade-off whose masks drop whole channels physically narrower (the
        dropped channels removed), any other in the dense layout; True requires
        channel-structured masks; not with `runtime_tradeoff` or exits.
      policy: for a multi-exit model, its `keras_smart.exits.ExitPolicy`
        (its thresholds used at every trade-off, as `evaluate_tradeoff` uses
        them), or a list of them, one per trade-off, each calibrated at its
        trade-off (`tradeoffs` then defaults to theirs). Must be None for a
        model without exits.
      **to_tflite_options: other `to_tflite` arguments (check_data, atol, min_agreement, ...).

    Returns:
      The metadata written to `smart.json`, as a dict.

    Raises:
      FileExistsError: `out_dir` is not empty and `overwrite` is False.
      ValueError / TypeError: bad arguments, a `report` measured on other
        weights than `model`'s, a multi-exit model without `policy`, a policy
        for another model or trade-off (checked before anything is written).
      ExportError: a file failed its check (nothing is written).

    Example:
      >>> import os, tempfile
      >>> out_dir = os.path.join(tempfile.mkdtemp(), "smart")
      >>> metadata = keras_smart.export.bundle(smart, out_dir, tradeoffs=(1.0,), labels=[str(d) for d in range(10)],
      ...                                      check_data=x[:8])
      >>> sorted(os.listdir(out_dir))
      ['labels.txt', 'smart.json', 'tradeoff_100.tflite']
      >>> metadata["method"], metadata["input"]["shape"], metadata["num_classes"]
      ('smart', [-1, 28, 28, 1], 10)
      >>> [(entry["tradeoff"], entry["file"]) for entry in metadata["tradeoffs"]]
      [(1.0, 'tradeoff_100.tflite')]
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a Keras model. Received: {type(model).__name__}")
    out_dir = _check_out_dir(out_dir, overwrite)
    staged = staged_lib.is_staged(model, policy)
    if staged:
        tradeoffs = _check_tradeoffs(model, staged_lib.policy_tradeoffs(model, policy) if tradeoffs is None else tradeoffs)
        pipelines = staged_lib.check_policies(model, policy, tradeoffs)
    else:
        tradeoffs = _check_tradeoffs(model, tradeoffs)
    labels = _check_labels(labels, _num_classes(model, staged))
    rows = metadata_lib.report_rows(report)
    if rows is not None:
        metadata_lib.check_report_measured(model, rows)
    input_range = _check_range(input_range)
    if "tradeoff" in to_tflite_options or "path" in to_tflite_options:
        raise ValueError("`bundle` chooses each file's `tradeoff` and path itself; use `tradeoffs`.")
    options = dict(quantize=quantize, representative_data=representative_data, compact=compact, **to_tflite_options)
    if staged:
        options = _staged_options(model, runtime_tradeoff, options)

    staging = files.staging_directory(out_dir)
    try:
        if staged:
            exported, stage_files, section = staged_lib.export_stages(model, staging, pipelines, *options)
        else:
            exported = _export_files(model, staging, tradeoffs, runtime_tradeoff, options)
        contents = metadata_lib.metadata(model, exported, tradeoffs, rows, input_range, labels, runtime_tradeoff)
        if staged:
            contents["files"] += [
                {**metadata_lib.file_entry(name, tradeoff, result, None, False), "stage": stage}
                for name, tradeoff, stage, result in stage_files
            ]
            contents["staged"] = section
        _write_text(staging, metadata_lib.BUNDLE_LABELS, "".join(label + "\n" for label in labels))
        _write_text(staging, metadata_lib.BUNDLE_METADATA, json.dumps(contents, indent=2) + "\n")
        files.move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return contents


def _staged_options(model, runtime_tradeoff, options):
    """(stage files' ExportOptions, calibration images or None, check images) of a staged bundle."""
    defaults = {name: p.default for name, p in inspect.signature(to_tflite).parameters.items()}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"`bundle` got unexpected keyword arguments {unknown}.")
    settings = {**defaults, **options}
    checked = options_lib.check_staged_options(
        model, runtime_tradeoff=runtime_tradeoff, quantize=settings["quantize"],
        representative_data=settings["representative_data"], atol=settings["atol"],
        min_agreement=settings["min_agreement"], int8_io=settings["int8_io"], max_samples=settings["max_samples"],
        compact=settings["compact"],
    )
    representative, check = tflite_lib.samples(
        model, settings["representative_data"], settings["check_data"], checked.max_samples
    )
    return checked, representative, check


def _export_files(model, staging, tradeoffs, runtime_tradeoff, options):
    """Writes the bundle's `.tflite` file(s); returns (file name, baked trade-off or None, ExportResult) each."""
    if runtime_tradeoff or not tradeoffs:  # one file: the trade-off as an input, or a plain model
        if runtime_tradeoff:
            options.setdefault("check_tradeoffs", tradeoffs)
        name = metadata_lib.RUNTIME_FILE
        result = to_tflite(model, os.path.join(staging, name), runtime_tradeoff=runtime_tradeoff, **options)
        return [(name, None, result)]
    exported = []
    for tradeoff in tradeoffs:
        name = metadata_lib.bundle_file(tradeoff)
        exported.append((name, tradeoff, to_tflite(model, os.path.join(staging, name), tradeoff=tradeoff, **options)))
    return exported


def _write_text(directory, name, text):
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        f.write(text)


def _check_out_dir(out_dir, overwrite):
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"`out_dir` exists and is not a directory: {out_dir!r}")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(
            f"`out_dir` {out_dir!r} is not empty. Choose a new directory, or pass overwrite=True to replace it."
        )
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise ValueError(f"The parent directory of `out_dir` does not exist: {parent!r}")
    return out_dir


def _check_tradeoffs(model, tradeoffs):
    """The bundle's trade-offs, sorted: () for a plain model, (0.0, 1.0) by default for a SmartModel."""
    if not isinstance(model, training.SmartModel):
        if tradeoffs is not None and tuple(tradeoffs):
            raise ValueError(
                f"Model '{model.name}' is a plain Keras model: it has no trade-off. Leave `tradeoffs` unset. "
                f"Received: tradeoffs={tradeoffs!r}"
            )
        return ()
    tradeoffs = validation.check_tradeoffs((0.0, 1.0) if tradeoffs is None else tradeoffs, "tradeoffs")
    names = [metadata_lib.bundle_file(tradeoff) for tradeoff in tradeoffs]
    if len(set(names)) != len(names):
        raise ValueError(
            f"`tradeoffs` {list(tradeoffs)} are too close: their file names (trade-off to 0.01) collide."
        )
    return tradeoffs


def _num_classes(model, staged):
    """The number of classes (a multi-exit model's: its final output's), or None when not known."""
    outputs = model.outputs
    if outputs is None or not (len(outputs) == 1 or staged):
        return None
    return int(outputs[-1].shape[-1])


def _check_labels(labels, classes):
    if labels is None:
        if classes is None:
            raise ValueError("Pass `labels`: the model's number of classes is not known.")
        return [str(i) for i in range(classes)]
    if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
        raise TypeError(f"`labels` must be a list of strings. Received: {labels!r:.80}")
    labels = list(labels)
    if classes is not None and len(labels) != classes:
        raise ValueError(
            f"`labels` must name each of the model's {classes} classes. Received {len(labels)} labels."
        )
    bad = [label for label in labels if "\n" in label or "\r" in label or not label]
    if bad:
        raise ValueError(f"`labels` must be non-empty and on one line. Received: {bad[:3]}")
    return labels


def _check_range(input_range):
    """(min, max) as floats, finite, min < max."""
    try:
        low, high = input_range
    except (TypeError, ValueError):
        raise TypeError(f"`input_range` must be a (min, max) pair of numbers. Received: {input_range!r}") from None
    low, high = validation.check_real(low, "input_range[0]"), validation.check_real(high, "input_range[1]")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"`input_range` must be finite with min < max. Received: input_range={input_range!r}")
    return low, high
