"""The staged bundle of a multi-exit model: one LiteRT file per stage and trade-off, checked as a chain.

A phone runs stage 1 on the image, computes the entropy of exit 1's logits
and stops when it is below the policy's threshold; otherwise it feeds the
stage's features to stage 2, and so on; the last stage always answers. Each
set of stage files is checked the way the app runs it: chained in LiteRT
(each stage on the previous stage's LiteRT outputs), every exit's logits
against the Keras model's, within `to_tflite`'s tolerances. Beside the stages
each trade-off keeps its single-file model (the final exit only, what a
bundle without exits holds): the app's fallback and the latency baseline.
"""

import contextlib
import json
import os

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import conversion as conversion_lib
from keras_smart import exits
from keras_smart import training
from keras_smart.export import conversion
from keras_smart.export import macs as macs_lib
from keras_smart.export import metadata as metadata_lib
from keras_smart.export import stages as stages_lib
from keras_smart.export import verify
from keras_smart.export.result import INPUT_NAME
from keras_smart.export.result import OUTPUT_NAME
from keras_smart.export.result import ExportResult
from keras_smart.export.tflite import to_tflite
from keras_smart.layers import base

keras = _compat.keras

RULE = (
    "exit at the first stage whose softmax entropy (natural log) of its logits is below its threshold; "
    "the last stage always exits"
)


def is_staged(model, policy):
    """Whether `bundle` writes a staged bundle: the model has exits, or a policy was given."""
    return policy is not None or exits.is_multi_exit(model)


def policy_tradeoffs(model, policy):
    """The trade-offs a list of policies was calibrated at (a staged bundle's default), else None."""
    if not isinstance(policy, (list, tuple)) or not isinstance(model, training.SmartModel):
        return None
    found = [p.tradeoff for p in _policy_list(policy) if p.tradeoff is not None]
    return tuple(found) or None


def check_policies(model, policy, tradeoffs):
    """The policy of each bundle trade-off, checked against `model` before anything is written.

    Args:
      model: the model `bundle` exports.
      policy: an `ExitPolicy` (used at every trade-off, as `evaluate_tradeoff`
        uses it), or a list of them, one per trade-off (matched by their `tradeoff`).
      tradeoffs: the bundle's checked trade-offs (() for a plain model).

    Returns:
      [(trade-off or None, ExitPolicy)], one per set of stage files.

    Raises:
      ValueError: a model without exits, no policy, a policy calibrated for
        another model, a trade-off without a policy in the list.
      TypeError: `policy` is not an `ExitPolicy` or a list of them.
    """
    if not exits.is_multi_exit(model):
        raise ValueError(
            f"`policy` routes the exits of a multi-exit model, and model '{model.name}' has none. Pass "
            "policy=None, or export the model made by keras_smart.exits.attach(model, after=[...])."
        )
    if policy is None:
        after = [name for _, name in exits.exit_points(model)]
        raise ValueError(
            f"Model '{model.name}' has exits (after {after}): its bundle is staged, and the app needs the exit "
            "thresholds. Pass policy=keras_smart.exits.calibrate(model, held_out_data, budget=...), or export a "
            "model without exits."
        )
    policies = _policy_list(policy)
    for p in policies:
        p.check_model(model)
    if not isinstance(policy, (list, tuple)):
        return [(t, policy) for t in tradeoffs] or [(None, policy)]
    if not tradeoffs:
        if len(policies) != 1:
            raise ValueError(f"Model '{model.name}' has no trade-off: pass one policy. Received {len(policies)}.")
        return [(None, policies[0])]
    return [(t, _policy_at(policies, t, model.name)) for t in tradeoffs]


def _policy_list(policy):
    policies = list(policy) if isinstance(policy, (list, tuple)) else [policy]
    bad = [type(p).__name__ for p in policies if not isinstance(p, exits.ExitPolicy)]
    if bad or not policies:
        raise TypeError(
            "`policy` must be a keras_smart.exits.ExitPolicy (from keras_smart.exits.calibrate) or a list of "
            f"them, one per trade-off. Received: {bad or policies}"
        )
    return policies


def _policy_at(policies, tradeoff, model_name):
    found = [p for p in policies if p.tradeoff is not None and abs(p.tradeoff - tradeoff) < 1e-6]
    if len(found) != 1:
        calibrated = [p.tradeoff for p in policies]
        raise ValueError(
            f"The bundle of '{model_name}' offers trade-off {tradeoff:g}, and {len(found)} of the policies in the "
            f"list were calibrated there (their trade-offs: {calibrated}). Pass one policy per trade-off "
            "(keras_smart.exits.calibrate after keras_smart.set_tradeoff(model, t)), `tradeoffs` you have "
            "policies for, or a single policy (used at every trade-off)."
        )
    return found[0]


def export_stages(model, staging, pipelines, options, representative, check):
    """Writes each trade-off's single-file model and stage files into `staging`, all checked.

    Args:
      model: the multi-exit model (a SmartModel or a plain model).
      staging: the directory the bundle is assembled in.
      pipelines: `check_policies`' [(trade-off or None, ExitPolicy)].
      options: the stage files' `ExportOptions` (`options.check_staged_options`).
      representative: float32 calibration images for int8, or None.
      check: float32 images the chain is checked on.

    Returns:
      (exported single files as bundle's (file name, trade-off, ExportResult)
      list, the stage files as (file name, trade-off, stage number,
      ExportResult), the "staged" section of smart.json).

    Raises:
      ExportError: a file failed to convert or its check.
    """
    points = exits.exit_points(model)
    singles, stage_files, entries = [], [], []
    for tradeoff, policy in pipelines:
        plain = conversion_lib.strip(model, tradeoff) if isinstance(model, training.SmartModel) else (
            conversion_lib.clone(model))
        singles.append(_single_file(plain, staging, tradeoff, options, representative, check))
        stages = stages_lib.split(plain, points)
        results = _stage_files(model, stages, staging, tradeoff, options, representative, check)
        stage_files += [(os.path.basename(r.path), tradeoff, s.index, r) for s, r in zip(stages, results)]
        macs = exits.exit_macs(model, tradeoff=tradeoff)
        entries.append(_pipeline_entry(tradeoff, policy, stages, results, macs, singles[-1][0]))
    return singles, stage_files, _staged_section(points, entries)


def _single_file(plain, staging, tradeoff, options, representative, check):
    """The final exit alone, as one file: what a bundle without exits holds at this trade-off."""
    final = keras.Model(plain.inputs[0], plain.outputs[-1], name=plain.name)
    name = metadata_lib.RUNTIME_FILE if tradeoff is None else metadata_lib.bundle_file(tradeoff)
    result = to_tflite(
        final, os.path.join(staging, name), quantize=options.quantize, representative_data=representative,
        check_data=check, atol=options.atol, min_agreement=options.min_agreement, max_samples=options.max_samples,
    )
    return name, tradeoff, result


def _stage_files(model, stages, staging, tradeoff, options, representative, check):
    """Converts every stage, then checks them chained; returns an `ExportResult` per stage."""
    int8 = options.quantize == "int8" and representative is not None
    calibration = _stage_inputs(stages, representative) if int8 else None
    paths = []
    for stage in stages:
        generator = None if calibration is None else _representative(stage, calibration[stage.index - 1])
        data = conversion.function_bytes(
            _serving_function(stage), stage.model.weights, options, generator, stage.model.name
        )
        paths.append(os.path.join(staging, metadata_lib.stage_file(tradeoff, stage.index)))
        with open(paths[-1], "wb") as f:
            f.write(data)
    return check_chain(paths, stages, check, keras_exits(model, check, tradeoff), options)


def _serving_function(stage):
    """The stage as a `tf.function` with named inputs, returning {output name: float32 tensor}."""
    specs = [
        tf.TensorSpec((None, *tuple(t.shape[1:])), tf.float32, name=name)
        for t, name in zip(stage.model.inputs, stage.input_names)
    ]

    def serve(*tensors):
        with base.expected_noise():  # NoiseInjection layers at their expectation, as in every export
            outputs = stage.model(list(tensors), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {name: tf.cast(o, tf.float32) for name, o in zip(stage.output_names, outputs)}

    return tf.function(serve, input_signature=specs)


def _stage_inputs(stages, x):
    """Each stage's Keras inputs on images `x` ({input name: array}), for int8 calibration."""
    found, feeds = [], {INPUT_NAME: x}
    for stage in stages:
        found.append(feeds)
        if stage.feature_names:
            with base.expected_noise():
                outputs = stage.model([feeds[name] for name in stage.input_names], training=False)
            feeds = {name: np.asarray(o, np.float32) for name, o in zip(stage.output_names, outputs)}
    return found


def _representative(stage, inputs):
    count = len(inputs[stage.input_names[0]])

    def generate():
        for i in range(count):
            yield {name: inputs[name][i : i + 1] for name in stage.input_names}

    return generate


def keras_exits(model, x, tradeoff):
    """The Keras model's logits of every exit on `x` (float32 arrays), at `tradeoff` for a SmartModel."""
    override = base.tradeoff_override(float(tradeoff)) if isinstance(model, training.SmartModel) else contextlib.nullcontext()
    with base.expected_noise(), override:
        outputs = model(x, training=False)
    return [np.asarray(o, np.float32) for o in outputs]


def check_chain(paths, stages, x, expected, options):
    """Runs the stage files chained in LiteRT on `x`; each exit must match Keras as `to_tflite`'s files do.

    Args:
      paths: the stage files, in order.
      stages: their `Stage`s.
      x: float32 images.
      expected: the Keras logits of each exit on `x`.
      options: the `ExportOptions` (atol, min_agreement).

    Returns:
      An `ExportResult` per stage (its check numbers are its exit's, through the chain).

    Raises:
      ExportError: a file LiteRT cannot load or run, or an exit too far from Keras.
    """
    results, feeds = [], {INPUT_NAME: x}
    for path, stage, want in zip(paths, stages, expected):
        ops, runner = verify.load(path)
        got = verify.run(runner, feeds)
        max_diff, agree, total = verify.compare_outputs(
            got[OUTPUT_NAME], want, verify.tie_tolerance(want, options.quantize)
        )
        verify.require_parity(max_diff, agree / max(total, 1), len(x), (), options, path)
        executed, nonzero = macs_lib.file_macs(stage.model, runtime_tradeoff=False)
        results.append(
            ExportResult(
                path=path, size_bytes=os.path.getsize(path), quantize=options.quantize, tradeoff=None,
                runtime_tradeoff=False, max_abs_diff=max_diff, agreement=agree / max(total, 1),
                check_samples=len(x), check_tradeoffs=(), ops=ops,
                inputs=verify.tensor_details(runner.get_input_details()),
                outputs=verify.tensor_details(runner.get_output_details()),
                executed_macs=executed, nonzero_macs=nonzero,
            )
        )
        feeds = {name: got[name] for name in stage.feature_names}
    return results


def _pipeline_entry(tradeoff, policy, stages, results, macs, single_file):
    """One trade-off's stages in smart.json: files, signatures, thresholds, MACs."""
    thresholds = [float(t) for t in policy.thresholds]
    rows = []
    for stage, result in zip(stages, results):
        k = stage.index
        rows.append(
            {
                "stage": k,
                "file": os.path.basename(result.path),
                "exit": k,
                "threshold": thresholds[k - 1] if k <= len(thresholds) else None,
                "inputs": [_signature_entry(result.inputs, name) for name in stage.input_names],
                "outputs": [_signature_entry(result.outputs, name) for name in stage.output_names],
                "features": list(stage.feature_names),
                "layers": list(stage.layers),
                "macs": macs[k - 1] - (macs[k - 2] if k > 1 else 0),
                "cumulative_macs": macs[k - 1],
            }
        )
    return {
        "tradeoff": tradeoff,
        "single_file": single_file,
        "thresholds": thresholds,
        "policy": json.loads(policy.to_json()),
        "stages": rows,
    }


def _signature_entry(tensors, name):
    entry = next(t for t in tensors if t["name"] == name)
    return {"name": name, "shape": entry["shape"], "dtype": entry["dtype"]}


def _staged_section(points, pipelines):
    sides = [{"exit": k, "head": head, "after": after} for k, (head, after) in enumerate(points, start=1)]
    return {
        "rule": RULE,
        "entropy": {"of": "softmax(logits)", "log": "natural"},
        "logits": OUTPUT_NAME,
        "exits": sides + [{"exit": len(points) + 1, "head": None, "after": None}],
        "pipelines": pipelines,
    }

