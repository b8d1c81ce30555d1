"""bundle: the app's directory (checked files, labels.txt, smart.json), written all at once or not at all."""

import hashlib
import json
import os
import stat
import warnings

import numpy as np
import pytest

import keras_smart
from keras_smart import export
from keras_smart import pruning
from tests import models
from tests.export import common
from tests.models import keras


class _Report:
    """Stands in for keras_smart.evaluation.TradeoffReport: anything with to_json()."""

    def to_json(self):
        return json.dumps(
            {
                "settings": {"eps": 0.3, "attacks": ["pgd"]},
                "rows": [
                    {"tradeoff": 0.0, "clean": 0.97, "pgd": 0.10, "worst_case": 0.10, "nonzero": 100, "macs": 1000},
                    {"tradeoff": 1.0, "clean": 0.90, "pgd": 0.60, "worst_case": 0.55, "nonzero": 80, "macs": 800},
                ],
                "warnings": [],
            }
        )


def test_bundle_writes_files_labels_and_metadata(tmp_path):
    smart = common.converted("smart")
    out = tmp_path / "bundle"
    labels = ["zero", "one", "two", "three"]
    with pytest.warns(UserWarning, match="no model fingerprint.*cannot check"):
        metadata = export.bundle(smart, out, tradeoffs=(1.0, 0.0), labels=labels, report=_Report())
    assert common.files(out) == ["labels.txt", "smart.json", "tradeoff_000.tflite", "tradeoff_100.tflite"]
    assert (out / "labels.txt").read_text().splitlines() == labels
    on_disk = json.loads((out / "smart.json").read_text())
    assert on_disk == metadata
    assert on_disk["input"]["name"] == "input" and on_disk["input"]["shape"] == [-1, 12, 12, 3]
    assert on_disk["input"]["dtype"] == "float32" and on_disk["input"]["value_range"] == [0.0, 1.0]
    assert on_disk["input"]["layout"] == "NHWC"
    assert on_disk["output"]["shape"] == [-1, 4] and on_disk["output"]["kind"] == "logits"
    assert on_disk["num_classes"] == 4
    assert on_disk["method"] == "smart" and not on_disk["runtime_tradeoff"] and "tradeoff_input" not in on_disk
    x = models.inputs_for(smart, batch=8, seed=3)
    for entry, tradeoff, accuracy in zip(on_disk["files"], (0.0, 1.0), (0.97, 0.90)):
        path = out / entry["file"]
        assert entry["tradeoff"] == tradeoff and entry["size_bytes"] == os.path.getsize(path)
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["accuracy"]["clean"] == accuracy and "tradeoff" not in entry["accuracy"]
        assert models.max_abs_diff(common.run_file(path, x), common.keras_outputs(smart, x, tradeoff)) <= 1e-4
    assert on_disk["report"]["settings"]["eps"] == 0.3
    assert [t["tradeoff"] for t in on_disk["tradeoffs"]] == [0.0, 1.0], "sorted"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask, "the bundle directory is not left private"
    assert stat.S_IMODE((out / "tradeoff_000.tflite").stat().st_mode) == 0o666 & ~umask


def test_runtime_bundle_has_one_file_with_a_tradeoff_input(tmp_path):
    smart = common.converted("oat")
    report = json.loads(_Report().to_json())  # a dict works as well as an object
    with pytest.warns(UserWarning, match="no model fingerprint"):
        metadata = export.bundle(
            smart, tmp_path / "b", tradeoffs=(0.0, 0.4, 1.0), runtime_tradeoff=True, report=report
        )
    assert common.files(tmp_path / "b") == ["labels.txt", "model.tflite", "smart.json"]
    assert metadata["method"] == "oat"
    assert metadata["tradeoff_input"] == {"name": "tradeoff", "shape": [1], "dtype": "float32", "range": [0.0, 1.0]}
    assert [t["file"] for t in metadata["tradeoffs"]] == ["model.tflite"] * 3
    assert metadata["tradeoffs"][1]["accuracy"] is None and metadata["tradeoffs"][2]["accuracy"]["pgd"] == 0.60
    assert "accuracy" not in metadata["files"][0], "a runtime file's accuracies are per trade-off"
    assert (tmp_path / "b" / "labels.txt").read_text().splitlines() == ["0", "1", "2", "3"]


def test_plain_model_bundle_takes_the_report_row_without_a_tradeoff(tmp_path):
    plain = models.conv_block_model()
    report = {"settings": {}, "rows": [{"tradeoff": None, "clean": 0.8, "worst_case": 0.2}], "warnings": []}
    with pytest.warns(UserWarning, match="no model fingerprint"):
        metadata = export.bundle(plain, tmp_path / "b", report=report)
    assert common.files(tmp_path / "b") == ["labels.txt", "model.tflite", "smart.json"]
    assert metadata["files"][0]["accuracy"] == {"clean": 0.8, "worst_case": 0.2}
    assert metadata["method"] is None and metadata["tradeoffs"] == []
    with pytest.raises(ValueError, match="no trade-off"):
        export.bundle(plain, tmp_path / "c", tradeoffs=(0.0,))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"labels": ["a", "b"]}, ValueError, "name each of the model's 4 classes"),
        ({"labels": "abcd"}, TypeError, "`labels` must be a list of strings"),
        ({"labels": ["a", "b\nc", "d", "e"]}, ValueError, "`labels` must be non-empty and on one line"),
        ({"tradeoffs": (0.0, 2.0)}, ValueError, "must be in \\[0, 1\\]"),
        ({"tradeoffs": ()}, ValueError, "`tradeoffs` is empty"),
        ({"tradeoffs": (0.5, 0.501)}, ValueError, "too close"),
        ({"input_range": (1.0, 0.0)}, ValueError, "`input_range` must be finite with min < max"),
        ({"input_range": (0.0, "1")}, TypeError, "`input_range\\[1\\]` must be a real number"),
        ({"input_range": 1.0}, TypeError, "`input_range` must be a \\(min, max\\) pair"),
        ({"report": {"rows": "none"}}, TypeError, "`report` must be a TradeoffReport"),
        ({"tradeoff": 0.5}, ValueError, "use `tradeoffs`"),
    ],
)
def test_bad_bundle_arguments_fail_before_writing(kwargs, error, match, tmp_path):
    smart = common.converted("smart")
    with pytest.raises(error, match=match):
        export.bundle(smart, tmp_path / "b", **kwargs)
    assert common.files(tmp_path) == []


def test_bundle_refuses_a_non_empty_directory_and_leaves_nothing_on_failure(tmp_path):
    smart = common.converted("smart")
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        export.bundle(smart, out)
    assert common.files(out) == ["keep.txt"]
    with pytest.raises(export.ExportError):
        export.bundle(smart, out, overwrite=True, atol=1e-12)
    assert common.files(out) == ["keep.txt"], "a failed bundle leaves the old directory as it was"
    with pytest.raises(export.ExportError):
        export.bundle(smart, tmp_path / "fresh", atol=1e-12)
    assert common.files(tmp_path) == ["bundle"], "no staging directory is left behind"
    with pytest.raises(ValueError, match="exists and is not a directory"):
        export.bundle(smart, out / "keep.txt")
    export.bundle(smart, out, tradeoffs=(1.0,), overwrite=True)
    assert common.files(out) == ["labels.txt", "smart.json", "tradeoff_100.tflite"]
    assert common.files(tmp_path) == ["bundle"], "the replaced directory is gone"


def _evaluated(model):
    """A real (tiny) trade-off report on the default grid: FGSM on 8 examples."""
    x = models.inputs_for(model, batch=8, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", keras_smart.evaluation.GradientMaskingWarning)  # an untrained model
        return keras_smart.evaluate_tradeoff(model, (x, np.arange(8) % 4), attacks=("fgsm",), eps=0.1, progress=False)


def _row_at(rows, tradeoff):
    return next(row for row in rows if row["tradeoff"] == tradeoff)


def test_bundle_refuses_a_report_measured_before_pruning_and_writes_nothing(tmp_path):
    smart = common.converted("smart")
    report = _evaluated(smart)
    pruning.prune(smart, 0.5)
    stale = "measured on different weights, masks or pruning state than the model being exported"
    fix = r"Re-run keras_smart.evaluate_tradeoff\(model, \.\.\.\) after pruning, or pass report=None\."
    for given in (report, json.loads(report.to_json()), report.to_json()):
        with pytest.raises(ValueError, match=f"{stale}.*{fix}"):
            export.bundle(smart, tmp_path / "bundle", report=given)
    assert common.files(tmp_path) == [], "nothing is written, no staging directory is left"
    out = tmp_path / "old"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=report.fingerprint):
        export.bundle(smart, out, report=report, overwrite=True)
    assert common.files(out) == ["keep.txt"]
    fresh = _evaluated(smart)  # the fix the message names
    assert fresh.fingerprint != report.fingerprint
    assert _row_at(fresh.rows, 1.0)["nonzero"] < _row_at(report.rows, 1.0)["nonzero"]  # stale counts: unpruned
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a checked report raises no warning
        metadata = export.bundle(smart, tmp_path / "bundle", report=fresh)
    assert metadata["report"]["settings"]["model_fingerprint"] == fresh.fingerprint
    assert metadata["tradeoffs"][1]["accuracy"]["nonzero"] == _row_at(fresh.rows, 1.0)["nonzero"]
    assert export.bundle(smart, tmp_path / "plain", report=None)["tradeoffs"][0]["accuracy"] is None


def test_report_json_of_a_saved_model_bundles_its_reloaded_copy_at_any_tradeoff(tmp_path):
    """The CLI's path: evaluate model.keras, write report.json; export loads model.keras again."""
    smart = common.converted("smart-blend")
    smart.save(str(tmp_path / "model.keras"))
    evaluated = keras.models.load_model(str(tmp_path / "model.keras"))
    keras_smart.set_tradeoff(evaluated, 0.3)
    (tmp_path / "report.json").write_text(_evaluated(evaluated).to_json())
    exported = keras.models.load_model(str(tmp_path / "model.keras"))
    keras_smart.set_tradeoff(exported, 0.9)
    report = json.loads((tmp_path / "report.json").read_text())
    metadata = export.bundle(exported, tmp_path / "bundle", tradeoffs=(0.0, 1.0), report=report)
    assert metadata["report"]["settings"]["model_fingerprint"] == keras_smart.evaluation.model_fingerprint(smart)
    clean = [t["accuracy"]["clean"] for t in metadata["tradeoffs"]]
    assert clean == [_row_at(report["rows"], 0.0)["clean"], _row_at(report["rows"], 1.0)["clean"]]
