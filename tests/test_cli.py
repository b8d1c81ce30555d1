"""The keras-smart command line: each subcommand end to end on a tiny budget, refusal to overwrite, resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_smart
from keras_smart import cli
from tests.models import keras

# Switch mode trains two trade-off groups per batch instead of blend's six: these tests check the CLI, not the mode.
TINY = cli.TrainSettings(
    epochs=2, max_examples=128, batch_size=64, attack_steps=1, eps_warmup=1, mask_warmup=1, tradeoff_mode="switch"
)


class _Interrupt(keras.callbacks.Callback):
    """Stops the process-like run after `epochs` epochs, as a crash would (BackupAndRestore has saved)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt("simulated interruption")


def test_train_refuses_to_overwrite_a_finished_run_unless_told(tmp_path):
    settings = cli.TrainSettings(**{**TINY.__dict__, "epochs": 1, "mask_warmup": 0})
    cli.train(settings, tmp_path / "run", verbose=0)
    assert (tmp_path / "run" / "model.keras").exists()
    with pytest.raises(cli.RunExistsError, match="finished run.*--overwrite"):
        cli.train(settings, tmp_path / "run", verbose=0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(cli.RunExistsError, match="not a keras-smart run"):
        cli.train(settings, tmp_path / "other", verbose=0)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    cli.train(settings, tmp_path / "run", overwrite=True, verbose=0)


def test_an_interrupted_train_resumes_where_it_stopped(tmp_path):
    run = tmp_path / "run"
    settings = cli.TrainSettings(**{**TINY.__dict__, "epochs": 3})
    with pytest.raises(KeyboardInterrupt):
        cli.train(settings, run, extra_callbacks=[_Interrupt(2)], verbose=0)
    assert not (run / "model.keras").exists() and (run / "backup").exists()
    with pytest.raises(cli.RunExistsError, match="other settings \\(epochs\\)"):
        cli.train(cli.TrainSettings(**{**TINY.__dict__, "epochs": 4}), run, verbose=0)
    epochs_seen = []
    resumed = cli.train(
        settings, run, verbose=0,
        extra_callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_seen.append(e))],
    )
    assert epochs_seen == [2], "resume runs only the epoch that was left"
    assert int(resumed.optimizer.iterations.numpy()) == 3 * 2  # 128 examples / 64 per batch, three epochs
    history = (run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 3  # header + one row per epoch, across the interruption
    counts = keras_smart.count_nonzero(resumed)
    assert abs(counts.clean / counts.total - TINY.density[0]) < 0.01  # masks designed before the stop survive


def test_bad_settings_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="Unknown backbone"):
        cli.TrainSettings(backbone="vgg")
    with pytest.raises(ValueError, match="eps"):
        cli.TrainSettings(eps=-1.0)
    with pytest.raises(ValueError, match="lambdas"):
        cli.TrainSettings(lambdas=(0.0, 2.0))
    with pytest.raises(ValueError, match="mask_allocation"):
        cli.TrainSettings(mask_allocation="model")
    with pytest.raises(ValueError, match="learned"):
        cli.TrainSettings(mask_score="learned")
    assert not any(tmp_path.iterdir())


def _cli(*args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "keras_smart.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_subcommands_train_evaluate_and_export_a_run(tmp_path):
    args = ["train", f"--output_dir={tmp_path / 'run'}", "--epochs=1", "--max_examples=64", "--attack_steps=1",
            "--mask_warmup=0", "--eps_warmup=0"]
    first = _cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["method"] == "smart" and config["epochs"] == 1
    assert any((tmp_path / "run" / "logs").rglob("*tfevents*")), "TensorBoard logs"
    second = _cli(*args, cwd=tmp_path)
    assert second.returncode == 2 and "--overwrite" in second.stderr

    run = f"--run_dir={tmp_path / 'run'}"
    evaluated = _cli("evaluate", run, "--eval_examples=16", "--attacks=fgsm", "--tradeoffs=0,1", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "| λ | clean | fgsm |" in evaluated.stdout
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert [row["tradeoff"] for row in report["rows"]] == [0.0, 1.0]
    exported = _cli("export", run, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "tradeoff_100.tflite: λ = 1, float32" in exported.stdout and "top-1 agreement 100.0%" in exported.stdout
    assert sorted(p.name for p in (tmp_path / "run" / "bundle").iterdir()) == [
        "labels.txt", "smart.json", "tradeoff_000.tflite", "tradeoff_100.tflite"
    ]
    missing = _cli("evaluate", f"--run_dir={tmp_path / 'none'}", cwd=tmp_path)
    assert missing.returncode == 2 and "train first" in missing.stderr


def test_demo_trains_evaluates_and_exports_on_a_tiny_budget(tmp_path, capsys):
    report, bundle = cli.demo(
        tmp_path / "demo", epochs=1, max_examples=128, eval_examples=32, attacks=("fgsm", "pgd20"),
        quantize=None, verbose=0,  # quantized files' top-1 check needs a model trained longer than one tiny epoch
    )
    out = capsys.readouterr().out
    assert [row["tradeoff"] for row in report.rows] == list(cli.DEMO_TRADEOFFS)
    assert "| λ | clean | fgsm | pgd20 |" in out and str(tmp_path / "demo" / "bundle") in out
    assert "tradeoff_000.tflite: λ = 0, float32" in out
    written = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert written["rows"] == json.loads(report.to_json())["rows"]
    assert (tmp_path / "demo" / "report" / "frontier.png").stat().st_size > 0
    metadata = json.loads((tmp_path / "demo" / "bundle" / "smart.json").read_text())
    files = sorted(p.name for p in (tmp_path / "demo" / "bundle").glob("*.tflite"))
    assert files == ["tradeoff_000.tflite", "tradeoff_100.tflite"]
    assert "clean" in json.dumps(metadata), "the bundle carries the measured accuracies"
    assert (tmp_path / "demo" / "bundle" / "labels.txt").read_text().split() == [str(d) for d in range(10)]


def test_demo_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(cli.RunExistsError, match="not a keras-smart run"):
        cli.demo(tmp_path, epochs=1, max_examples=64, verbose=0)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_evaluate_and_export_need_a_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="train first"):
        cli.evaluate(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="train first"):
        cli.export(tmp_path / "nothing")
