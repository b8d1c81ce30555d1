"""The examples run end to end."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import keras_smart
from examples import cifar10_mobilenet
from examples import quickstart
from examples import tfmot_pruning
from keras_smart import cli

keras = keras_smart.keras
ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_runs_and_its_claims_hold(capsys):
    result = quickstart.main(image_size=32, density=(0.5, 0.3), seed=0)
    assert result["conversion_gap"] <= 1e-5
    assert result["strip_gap"] <= 1e-5
    counts = result["counts"]
    assert counts.clean == pytest.approx(0.5 * counts.total, rel=0.01)
    assert counts.adv == pytest.approx(0.3 * counts.total, rel=0.01)
    assert "non-zero kernel weights" in capsys.readouterr().out


# --- examples/cifar10_mobilenet.py -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(keras_smart.KERAS_FLAVOUR != "keras3", reason="suite time (80 s): the recipe runs through "
                    "keras_smart.cli.runs, which the CLI tests exercise in tf_keras")
def test_cifar10_mobilenet_trains_evaluates_and_writes_the_report_and_the_bundle(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    out = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=64):  # tfds' offline stand-in for CIFAR-10
        result = cifar10_mobilenet.main(
            epochs=1, max_examples=32, eval_examples=32, attacks=("fgsm",), batch_size=32, download=True,
            output_dir=str(out), quantize=None, attack_steps=1, eps_warmup=0, mask_warmup=5, run_eagerly=True,
            verbose=0,
        )
    written = {name: pathlib.Path(path) for name, path in result["files"].items()}
    assert written["model"] == out / "model.keras" and written["report_json"] == out / "report" / "report.json"
    for name, path in written.items():
        assert path.exists() and (path.is_dir() or path.stat().st_size > 0), name
    assert written["frontier"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The output directory is a keras-smart run (`keras-smart evaluate --run_dir` reads it) of the CIFAR-10 recipe.
    settings = cli.TrainSettings.from_json(written["config"].read_text())
    recipe = (settings.dataset, settings.backbone, settings.eps, settings.augment)
    assert recipe == ("cifar10", "mobilenet_v2", 8 / 255, True)
    assert settings.mask_warmup == 0, "mask_warmup=5 is clamped to epochs - 1, so that the masks are designed"
    # The training recipe ran: adversarial logs at the full budget, masks designed despite 1 epoch < mask_warmup.
    assert result["history"]["adv_eps"] == [pytest.approx(8 / 255)]
    assert "adv_accuracy" in result["history"]
    counts = result["nonzero"]
    assert counts["clean"] == pytest.approx(0.35 * counts["total"], rel=0.01)
    assert counts["adv"] == pytest.approx(0.35 * counts["total"], rel=0.01)
    # The report: one row per trade-off, attacked accuracy never above clean.
    rows = json.loads(written["report_json"].read_text())["rows"]
    assert rows == result["rows"]
    assert [row["tradeoff"] for row in rows] == [0.0, 1.0]
    assert result["report"].settings["examples"] == 32
    for row in rows:
        assert 0.0 <= row["worst_case"] <= row["fgsm"] <= row["clean"] <= 1.0
    assert "| λ | clean | fgsm |" in written["report_md"].read_text()
    # The bundle: one float file per trade-off, a label per class, the measured accuracies.
    bundle = written["bundle"]
    assert sorted(p.name for p in bundle.iterdir()) == [
        "labels.txt", "smart.json", "tradeoff_000.tflite", "tradeoff_100.tflite"
    ]
    labels = (bundle / "labels.txt").read_text().splitlines()
    assert len(set(labels)) == 10  # the mock has no metadata, so tfds names the classes "0".."9"
    metadata = json.loads((bundle / "smart.json").read_text())
    assert metadata == result["bundle"]
    assert metadata["method"] == "smart" and metadata["input"]["shape"] == [-1, 32, 32, 3]
    for entry, row in zip(metadata["tradeoffs"], rows):
        assert entry["accuracy"]["clean"] == row["clean"] and entry["accuracy"]["fgsm"] == row["fgsm"]
    assert all(f["quantize"] is None and f["check"]["max_abs_diff"] <= 1e-4 for f in metadata["files"])


def test_cifar10_mobilenet_without_prepared_data_fails_before_writing_anything(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    out = tmp_path / "run"
    with pytest.raises(keras_smart.data.DataNotAvailableError, match="'cifar10' is not prepared"):
        cifar10_mobilenet.main(data_dir=str(tmp_path / "tfds"), output_dir=str(out), verbose=0)
    assert not out.exists()


# --- examples/tfmot_pruning.py ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(keras_smart.KERAS_FLAVOUR != "tf_keras", reason="TF-MOT needs TF_USE_LEGACY_KERAS=1")
def test_tfmot_pruning_reaches_the_target_sparsity_and_exports_int8(tmp_path):
    pytest.importorskip("tensorflow_model_optimization")
    result = tfmot_pruning.main(
        epochs=2, warmup_epochs=0, max_examples=256, eval_examples=64, batch_size=64, attack_steps=2,
        target_sparsity=0.75, qat_epochs=1, quantize="int8", min_agreement=0.9,
        output_dir=str(tmp_path), verbose=0,
    )
    sparsity = result["sparsity"]
    assert set(sparsity) == {"conv1/kernel", "conv2/kernel", "fc/kernel", "logits/kernel"}
    for name, value in sparsity.items():
        assert value == pytest.approx(0.75, abs=0.01), name  # every kernel, not only on average
    counts = result["nonzero"]
    assert counts["union"] <= 0.26 * counts["total"]
    assert counts["clean"] < counts["union"] and counts["adv"] < counts["union"], "the two paths still differ"
    # The saved model is the stripped, pruned SmartModel.
    loaded = keras.models.load_model(str(tmp_path / "model.keras"))
    assert isinstance(loaded, keras_smart.SmartModel)
    assert keras_smart.pruning.kernel_sparsity(loaded) == pytest.approx(sparsity)
    rows = result["rows"]
    assert [row["tradeoff"] for row in rows] == [0.0, 1.0]
    for row in rows + result["qat_rows"]:
        assert 0.0 <= row["pgd20"] <= row["clean"] <= 1.0
    assert json.loads((tmp_path / "report.json").read_text())["rows"] == rows
    assert [row["tradeoff"] for row in result["qat_rows"]] == [None]
    export = result["export"]
    assert (tmp_path / "robust.tflite").is_file() and export["quantize"] == "int8"
    assert "QUANTIZE" in export["ops"] and export["agreement"] >= 0.9


@pytest.mark.skipif(keras_smart.KERAS_FLAVOUR == "tf_keras", reason="Keras 3 only: the example must refuse")
def test_tfmot_pruning_under_keras3_says_to_set_tf_use_legacy_keras(tmp_path):
    with pytest.raises(RuntimeError, match="only tf_keras models.*TF_USE_LEGACY_KERAS=1.*keras_smart.pruning.prune"):
        tfmot_pruning.main(output_dir=str(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run").exists()
    assert "tensorflow_model_optimization" not in sys.modules


@pytest.mark.slow
@pytest.mark.skipif(keras_smart.KERAS_FLAVOUR == "tf_keras", reason="Keras 3 only: the example must refuse")
def test_tfmot_pruning_script_under_keras3_exits_with_the_message():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tfmot_pruning.py"), "--epochs=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "TF_USE_LEGACY_KERAS=1" in done.stderr and "Traceback" not in done.stderr
