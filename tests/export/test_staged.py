"""Staged bundles of multi-exit models: one LiteRT file per stage, chained as the app runs them, all or nothing."""

import hashlib
import json
import os

import numpy as np
import pytest

import keras_smart
from keras_smart import exits
from keras_smart import export
from keras_smart.export import staged
from keras_smart.layers import base
from tests import models
from tests.export import common


def _digits(n, split="test"):
    x, _ = keras_smart.data.digits(split)
    return x[:n]


def _smart_multi_exit():
    """A 3-exit SmartModel (exits after pool1 and pool2), each path computing its own function."""
    plain = exits.attach(keras_smart.backbones.digits_cnn(width=8), after=["pool1", "pool2"])
    smart = keras_smart.convert(plain)
    models.randomize_conditional_state(smart, seed=1)
    return smart


def _calibrated(model, tradeoff=None):
    """A policy sending an equal share of held-out inputs out at each exit."""
    x = _digits(64, "train") if model.inputs[0].shape[-1] == 1 else models.inputs_for(model, batch=64, seed=5)
    if tradeoff is not None:
        keras_smart.set_tradeoff(model, tradeoff)
    return exits.calibrate(model, x, shares=[1 / len(model.outputs)] * len(model.outputs))


def _keras_exits(model, x, tradeoff):
    with base.expected_noise(), base.tradeoff_override(tradeoff):
        return [np.asarray(logits) for logits in model(x, training=False)]


def _run_chain(bundle_dir, pipeline, x):
    """Each exit's logits from the stage files chained in LiteRT, read without keras_smart.export."""
    logits, feeds = [], {"input": x}
    for stage in pipeline["stages"]:
        runner = common.litert.Interpreter(model_path=str(bundle_dir / stage["file"])).get_signature_runner()
        assert sorted(feeds) == sorted(i["name"] for i in stage["inputs"])
        outputs = runner(**feeds)
        logits.append(outputs["output"])
        feeds = {name: outputs[name] for name in stage["features"]}
    return logits


def _left_in(directory):
    """Everything in `directory`, hidden staging directories included."""
    return sorted(os.listdir(directory))


def test_smart_multi_exit_bundle_has_a_chained_stage_file_per_exit(tmp_path):
    smart = _smart_multi_exit()
    policy = _calibrated(smart, tradeoff=1.0)
    keras_smart.set_tradeoff(smart, 0.0)  # a list of policies: the bundle bakes their trade-offs, not the model's
    x = _digits(48)
    metadata = export.bundle(smart, tmp_path / "b", policy=[policy], check_data=x)
    assert common.files(tmp_path / "b") == [
        "labels.txt", "smart.json", "tradeoff_100.tflite",
        "tradeoff_100_stage1.tflite", "tradeoff_100_stage2.tflite", "tradeoff_100_stage3.tflite",
    ]
    assert json.loads((tmp_path / "b" / "smart.json").read_text()) == metadata
    assert keras_smart.get_tradeoff(smart) == 0.0
    section = metadata["staged"]
    (pipeline,) = section["pipelines"]
    expected = _keras_exits(smart, x, 1.0)
    for got, want in zip(_run_chain(tmp_path / "b", pipeline, x), expected):
        assert models.max_abs_diff(got, want) <= 1e-4
    single = common.run_file(tmp_path / "b" / pipeline["single_file"], x)
    assert models.max_abs_diff(single, expected[-1]) <= 1e-4
    (entry,) = metadata["tradeoffs"]
    assert {k: entry[k] for k in ("tradeoff", "file", "accuracy")} == {
        "tradeoff": 1.0, "file": "tradeoff_100.tflite", "accuracy": None}
    single_file = next(f for f in metadata["files"] if f["file"] == "tradeoff_100.tflite")
    assert entry["executed_macs"] == single_file["executed_macs"] > 0
    stage_files = [f for f in metadata["files"] if f.get("stage")]
    assert sum(f["executed_macs"] for f in stage_files) > entry["executed_macs"], "the stages add the exit heads"


def test_smart_json_holds_the_stages_thresholds_and_costs(tmp_path):
    plain = exits.attach(keras_smart.backbones.digits_cnn(width=8), after=["pool1", "pool2"])
    policy = _calibrated(plain)
    metadata = export.bundle(plain, tmp_path / "b", policy=policy, check_data=_digits(16))
    section = metadata["staged"]
    assert "entropy" in section["rule"] and "natural log" in section["rule"] and "last stage always exits" in section["rule"]
    assert section["logits"] == "output" and section["entropy"]["log"] == "natural"
    assert [(e["head"], e["after"]) for e in section["exits"]] == [("exit_1", "pool1"), ("exit_2", "pool2"), (None, None)]
    (pipeline,) = section["pipelines"]
    assert pipeline["tradeoff"] is None and pipeline["single_file"] == "model.tflite"
    assert pipeline["thresholds"] == list(policy.thresholds)
    assert exits.ExitPolicy.from_json(json.dumps(pipeline["policy"])) == policy
    stages = pipeline["stages"]
    assert [s["file"] for s in stages] == ["stage1.tflite", "stage2.tflite", "stage3.tflite"]
    assert [s["threshold"] for s in stages] == [*policy.thresholds, None]
    assert stages[0]["inputs"] == [{"name": "input", "shape": [-1, 28, 28, 1], "dtype": "float32"}]
    assert [s["features"] for s in stages] == [["feature_pool1"], ["feature_pool2"], []]
    for before, after in zip(stages, stages[1:]):
        assert [i["name"] for i in after["inputs"]] == before["features"]
    assert [o["name"] for o in stages[0]["outputs"]] == ["output", "feature_pool1"]
    assert stages[1]["inputs"][0]["shape"] == [-1, 14, 14, 8] and stages[2]["inputs"][0]["shape"] == [-1, 7, 7, 16]
    macs = exits.exit_macs(plain)
    assert [s["cumulative_macs"] for s in stages] == list(macs)
    assert sum(s["macs"] for s in stages) == macs[-1]
    assert stages[2]["layers"] == ["flatten", "fc", "logits"]
    by_file = {entry["file"]: entry for entry in metadata["files"]}
    assert sorted(by_file) == ["model.tflite", "stage1.tflite", "stage2.tflite", "stage3.tflite"]
    for stage in stages:
        entry = by_file[stage["file"]]
        assert entry["stage"] == stage["stage"] and entry["check"]["max_abs_diff"] <= 1e-4
        assert entry["sha256"] == hashlib.sha256((tmp_path / "b" / stage["file"]).read_bytes()).hexdigest()
    timing = export.staged_latency(tmp_path / "b", _digits(40), warmup=2)
    assert timing["examples"] == 40 and timing["staged_ms"] > 0 and timing["single_ms"] > 0
    np.testing.assert_allclose(timing["exit_shares"], policy.exit_shares(plain, _digits(40)), atol=1 / 40)
    assert timing["expected_macs"] == pytest.approx(np.dot(timing["exit_shares"], macs) / macs[-1])


def test_a_residual_crossing_a_cut_is_handed_to_the_next_stage(tmp_path):
    resnet = keras_smart.backbones.resnet(8, input_shape=(16, 16, 3), width=4)
    # The first cut is inside a block: its shortcut (stem_relu's output) skips it; the second follows a block's add.
    multi = exits.attach(resnet, after=["stage1_block0_a_relu", "stage2_block0_add"])
    policy = _calibrated(multi)
    x = models.inputs_for(multi, batch=32, seed=2)
    metadata = export.bundle(multi, tmp_path / "b", policy=policy, check_data=x)
    (pipeline,) = metadata["staged"]["pipelines"]
    assert [s["features"] for s in pipeline["stages"]] == [
        ["feature_stem_relu", "feature_stage1_block0_a_relu"], ["feature_stage2_block0_add"], []
    ]
    for got, want in zip(_run_chain(tmp_path / "b", pipeline, x), multi(x)):
        assert models.max_abs_diff(got, want) <= 1e-4


def test_int8_stages_are_checked_by_top1_agreement_through_the_chain(tmp_path):
    plain = exits.attach(keras_smart.backbones.digits_cnn(width=8), after=["pool1", "pool2"])
    x = _digits(96)
    metadata = export.bundle(
        plain, tmp_path / "b", policy=_calibrated(plain), quantize="int8", representative_data=x[:64],
        check_data=x[64:], min_agreement=0.8,  # an untrained model's logits are close: int8 moves some top-1s
    )
    (pipeline,) = metadata["staged"]["pipelines"]
    entries = [e for e in metadata["files"] if e.get("stage")]
    assert len(entries) == 3 and all(e["quantize"] == "int8" and e["check"]["top1_agreement"] >= 0.8 for e in entries)
    assert all("QUANTIZE" in common.operator_names(tmp_path / "b" / e["file"]) for e in entries)
    assert [i["dtype"] for s in pipeline["stages"] for i in s["inputs"]] == ["float32"] * 3


def test_refusals_come_before_anything_is_written(tmp_path):
    smart = _smart_multi_exit()
    policy = _calibrated(smart, tradeoff=1.0)
    out = tmp_path / "b"
    with pytest.raises(ValueError, match=r"has exits \(after \['pool1', 'pool2'\]\).*policy=keras_smart.exits.calibrate"):
        export.bundle(smart, out)
    with pytest.raises(ValueError, match="runtime_tradeoff=True is not supported for a staged bundle"):
        export.bundle(smart, out, policy=policy, runtime_tradeoff=True)
    with pytest.raises(ValueError, match="offers trade-off 0, and 0 of the policies in the list were calibrated"):
        export.bundle(smart, out, policy=[policy], tradeoffs=(0.0, 1.0))
    with pytest.raises(ValueError, match="int8_io=True. is not supported for a staged bundle"):
        export.bundle(smart, out, policy=policy, quantize="int8", representative_data=_digits(8), int8_io=True)
    other = exits.attach(keras_smart.backbones.digits_cnn(width=8, name="other"), after=["pool1"])
    with pytest.raises(ValueError, match="calibrated for model 'digits_cnn'.*not for model 'other'"):
        export.bundle(other, out, policy=policy)
    with pytest.raises(ValueError, match="model 'digits_cnn' has none"):
        export.bundle(keras_smart.backbones.digits_cnn(width=8), out, policy=policy)
    with pytest.raises(TypeError, match="must be a keras_smart.exits.ExitPolicy"):
        export.bundle(smart, out, policy={"thresholds": [1.0, 1.0]})
    assert _left_in(tmp_path) == []


def test_a_failed_stage_check_leaves_nothing_and_keeps_the_old_bundle(tmp_path, monkeypatch):
    plain = exits.attach(keras_smart.backbones.digits_cnn(width=8), after=["pool2"])
    policy = _calibrated(plain)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old.txt").write_text("old bundle")
    seen = []

    def failing_check(paths, *args):
        seen.extend(os.path.exists(p) for p in paths)
        raise export.ExportError("stage 2 differs")

    monkeypatch.setattr(staged, "check_chain", failing_check)
    with pytest.raises(export.ExportError, match="stage 2 differs"):
        export.bundle(plain, tmp_path / "b", policy=policy, check_data=_digits(8), overwrite=True)
    assert seen == [True, True], "the stage files were written before their check"
    assert _left_in(tmp_path) == ["b"] and _left_in(tmp_path / "b") == ["old.txt"]
    with pytest.raises(export.ExportError, match="differs from the Keras model"):
        export.bundle(plain, tmp_path / "new", policy=policy, check_data=_digits(8), atol=1e-12)
    assert _left_in(tmp_path) == ["b"]
