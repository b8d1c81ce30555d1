"""The keras-smart command line: each subcommand end to end on a tiny budget, refusal to overwrite, resume;
user errors answered in one line with nothing left behind, Ctrl-C, --help."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import keras_smart
from keras_smart import cli
from keras_smart.cli import commands
from keras_smart.cli import digits_demo
from keras_smart.cli import runs
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
    with pytest.raises(cli.RunExistsError, match="replaces only keras-smart runs"):
        cli.train(settings, tmp_path / "other", overwrite=True, verbose=0)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    run = tmp_path / "run"
    (run / "report").mkdir()  # what `evaluate` added to the finished run
    (run / "report" / "report.json").write_text("{}")
    first_model = (run / "model.keras").stat().st_mtime_ns
    replacement = cli.TrainSettings(**{**settings.__dict__, "epochs": 2})
    cli.train(replacement, run, overwrite=True, verbose=0)
    assert cli.TrainSettings.from_json((run / "config.json").read_text()) == replacement
    assert (run / "model.keras").stat().st_mtime_ns > first_model
    assert len((run / "history.csv").read_text().strip().splitlines()) == 1 + 2, "the new run's epochs only"
    left = {p.name for p in run.iterdir()} - {"backup"}  # tf_keras keeps BackupAndRestore's directory, emptied
    assert left == {"config.json", "model.keras", "history.csv", "logs"}, "no old report, no staging file"
    assert not any(p.is_file() for p in (run / "backup").rglob("*")), "no checkpoint left behind"


class _FailAtStart(keras.callbacks.Callback):
    """Fails (or is interrupted) once training has begun but before its first batch: run_dir is written then."""

    def __init__(self, error=RuntimeError("failed start")):
        super().__init__()
        self.error = error

    def on_train_batch_begin(self, batch, logs=None):
        raise self.error


def test_an_interrupted_train_resumes_where_it_stopped(tmp_path):
    run = tmp_path / "run"
    settings = cli.TrainSettings(**{**TINY.__dict__, "epochs": 3})
    with pytest.raises(KeyboardInterrupt):
        cli.train(settings, run, extra_callbacks=[_Interrupt(2)], verbose=0)
    assert not (run / "model.keras").exists() and (run / "backup").exists()
    with pytest.raises(cli.RunExistsError, match="other settings \\(epochs\\)"):
        cli.train(cli.TrainSettings(**{**TINY.__dict__, "epochs": 4}), run, verbose=0)
    kept = sorted(p.relative_to(run) for p in run.rglob("*") if "logs" not in p.parts)
    with pytest.raises(RuntimeError, match="failed start"):  # a resumed run that fails again keeps its files
        cli.train(settings, run, extra_callbacks=[_FailAtStart()], verbose=0)
    assert sorted(p.relative_to(run) for p in run.rglob("*") if "logs" not in p.parts) == kept
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
    with pytest.raises(ValueError, match="tradeoffs"):
        cli.TrainSettings(tradeoffs=(0.0, 2.0))
    with pytest.raises(ValueError, match="`tradeoffs` must contain 0"):
        cli.TrainSettings(tradeoffs=(0.5, 1.0))
    with pytest.raises(TypeError, match="`epochs` must be an int"):
        cli.TrainSettings(epochs=2.5)
    with pytest.raises(ValueError, match="`learning_rate` must be > 0"):
        cli.TrainSettings(learning_rate=0.0)
    with pytest.raises(ValueError, match="mask_allocation"):
        cli.TrainSettings(mask_allocation="model")
    with pytest.raises(ValueError, match="learned"):
        cli.TrainSettings(mask_score="learned")
    assert not any(tmp_path.iterdir())


def test_lambdas_is_the_deprecated_name_of_tradeoffs(tmp_path):
    with pytest.warns(DeprecationWarning, match="TrainSettings\\(lambdas=...\\)"):
        renamed = cli.TrainSettings(lambdas=(0, 0.5, 1))
    assert renamed == cli.TrainSettings(tradeoffs=(0.0, 0.5, 1.0)) and renamed.tradeoffs == (0.0, 0.5, 1.0)
    with pytest.raises(TypeError, match="both `tradeoffs` and its old name `lambdas`"):
        cli.TrainSettings(tradeoffs=(0.0, 1.0), lambdas=(0.0, 1.0))
    # A config.json an older run wrote says "lambdas": it still loads, and resumes as the same run.
    old = json.loads(TINY.to_json())
    old["lambdas"] = old.pop("tradeoffs")
    assert cli.TrainSettings.from_json(json.dumps(old)) == TINY


def test_the_lambdas_flag_warns_in_one_line_and_is_refused_with_tradeoffs(tmp_path, capsys, monkeypatch):
    received = []
    monkeypatch.setattr(runs, "train", lambda settings, run_dir, **kwargs: received.append(settings))
    renamed = _main(capsys, "train", "--lambdas=0,0.5,1", f"--output_dir={tmp_path / 'run'}")
    assert renamed.returncode == 0 and received[0].tradeoffs == (0.0, 0.5, 1.0)
    assert _answer(renamed.stderr) == [
        "keras-smart: warning: --lambdas is deprecated and will be removed in the next release: use --tradeoffs."
    ]
    both = _main(capsys, "train", "--lambdas=0,1", "--tradeoffs=0,1", f"--output_dir={tmp_path / 'run'}")
    assert _one_line(both) == "keras-smart: error: --lambdas is the old name of --tradeoffs: pass only --tradeoffs."
    assert _main(capsys, "train", "--tradeoffs=0,0.2,1", f"--output_dir={tmp_path / 'run'}").returncode == 0
    assert received[1].tradeoffs == (0.0, 0.2, 1.0)
    assert len(received) == 2


def _cli(*args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "keras_smart.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


# TensorFlow's C++ log lines (glog format; TF_CPP_MIN_LOG_LEVEL=3 does not stop those written before
# absl::InitializeLog) and absl.logging's lines from libraries (tensorflow-datasets): not the CLI's answer.
_LOG_LINE = re.compile(r"[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::")


def _answer(stderr):
    """What the command itself wrote on stderr: its lines, less the log lines."""
    return [line for line in stderr.splitlines() if line.strip() and not _LOG_LINE.match(line)]


def _start(*args, env=None, **popen):
    """`keras-smart args` started (with `env` added to this environment, less KERAS_SMART_DEBUG)."""
    base = {key: value for key, value in os.environ.items() if key != "KERAS_SMART_DEBUG"}
    return subprocess.Popen(
        [sys.executable, "-m", "keras_smart.cli", *args], env={**base, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        text=True, **popen,
    )


@pytest.mark.slow
@pytest.mark.skipif(keras_smart.KERAS_FLAVOUR != "tf_keras", reason="suite time: one flavour runs the CLI end to end "
                    "(tf_keras here, the multi-exit run below in Keras 3; the demo test runs in both)")
def test_subcommands_train_evaluate_and_export_a_run(tmp_path):
    args = ["train", f"--output_dir={tmp_path / 'run'}", "--epochs=1", "--max_examples=64", "--attack_steps=1",
            "--mask_warmup=0", "--eps_warmup=0"]
    typo = _cli("train", "--dataset=digitz", *args[1:], cwd=tmp_path)
    assert "error: Unknown data set 'digitz'" in _one_line(typo)
    assert not (tmp_path / "run").exists(), "a failed start leaves nothing behind"
    first = _cli(*args, cwd=tmp_path)  # the corrected command is accepted
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


@pytest.mark.slow
@pytest.mark.skipif(keras_smart.KERAS_FLAVOUR != "keras3", reason="suite time: the single-exit subcommand run above "
                    "covers tf_keras; tests/export/test_staged.py checks staged bundles in both flavours")
def test_a_run_with_exits_calibrates_on_held_out_examples_and_exports_stages(tmp_path):
    # One epoch: masks are designed after the first (mask_warmup=1), which multi-exit models do not support yet.
    settings = cli.TrainSettings(**{**TINY.__dict__, "epochs": 1, "max_examples": 64, "exits": ("pool1", "pool2")})
    run = tmp_path / "run"
    cli.train(settings, run, verbose=0)
    assert json.loads((run / "config.json").read_text())["exits"] == ["pool1", "pool2"]
    with pytest.raises(ValueError, match="exporting it needs its exit policy.*--budget=0.6"):
        cli.export(run)
    report = cli.evaluate(run, tradeoffs=(1.0,), attacks=("fgsm",), max_examples=16, budget=0.6, progress=False,
                          attack_options={"square": {"queries": 10}})
    assert report.settings["exit_calibration"] == {
        "split": "test", "examples": [500, 1000], "evaluated": [0, 16], "budget": 0.6, "tradeoff": 1.0
    }
    policy = keras_smart.exits.ExitPolicy.from_json((run / "policy.json").read_text())
    assert policy.budget == 0.6 and policy.exits == ("pool1", "pool2") and policy.tradeoff == 1.0
    metadata = cli.export(run, tradeoffs=(1.0,))
    assert metadata["staged"]["pipelines"][0]["thresholds"] == list(policy.thresholds)
    assert sorted(p.name for p in (run / "bundle").glob("*.tflite")) == [
        "tradeoff_100.tflite", "tradeoff_100_stage1.tflite", "tradeoff_100_stage2.tflite", "tradeoff_100_stage3.tflite"
    ]
    with pytest.raises(ValueError, match="`budget` must be"):
        cli.evaluate(run, budget=1.5)  # refused before any work


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


def test_a_start_that_fails_before_the_first_epoch_leaves_nothing_behind(tmp_path):
    fresh = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError, match="failed start"):
        cli.train(TINY, fresh, extra_callbacks=[_FailAtStart()], verbose=0)
    assert not (tmp_path / "new").exists(), "the directories it created are removed"
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(KeyboardInterrupt):
        cli.train(TINY, mine, extra_callbacks=[_FailAtStart(KeyboardInterrupt())], verbose=0)
    assert mine.is_dir() and not any(mine.iterdir()), "a directory it did not create stays; what it wrote goes"
    with pytest.raises(ValueError, match="Unknown data set 'digitz'"):
        cli.train(cli.TrainSettings(**{**TINY.__dict__, "dataset": "digitz"}), fresh, verbose=0)
    assert not (tmp_path / "new").exists(), "the data is loaded before anything is written"
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(cli.OutputDirError, match="is a file, not a directory"):
        cli.train(TINY, tmp_path / "a_file", verbose=0)
    with pytest.raises(cli.OutputDirError, match="cannot create it: .*a_file is a file"):
        cli.train(TINY, tmp_path / "a_file" / "run", verbose=0)
    assert (tmp_path / "a_file").read_text() == "mine"


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """What absl's app.run answers before `main` (flags, --help), as processes run at once: name -> result.

    The errors `main` answers are checked in this process (`_main`), each process paying TensorFlow's
    import; test_subcommands_train_evaluate_and_export_a_run runs one as a process too.
    """
    cases = {"unknown_flag": ["train", "--epochz=3"], "help": ["--help"]}
    started = {
        name: _start(*args, cwd=tmp_path_factory.mktemp("refused"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, args in cases.items()
    }
    results = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(cases[name], process.returncode, out, err)
    return results


def _main(capsys, *args):
    """`keras-smart args` in this process (flags parsed as app.run parses them, then reset): the result."""
    remaining = cli.FLAGS(["keras-smart", *args])
    try:
        status = cli.main(remaining)
    finally:
        cli.FLAGS.unparse_flags()
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, out, err)


def _one_line(result, returncode=2):
    """The one line a refused command answers (on stderr, with `returncode`), without a traceback."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert result.returncode == returncode, result.stderr[-3000:]
    answer = _answer(result.stderr)
    assert len(answer) == 1 and answer[0].startswith("keras-smart: "), answer
    return answer[0]


def test_a_dataset_that_is_wrong_or_missing_is_one_line_and_leaves_nothing(tmp_path, capsys):
    typo = _main(capsys, "train", "--dataset=digitz", f"--output_dir={tmp_path / 'run'}")
    assert "error: Unknown data set 'digitz'" in _one_line(typo)
    assert not (tmp_path / "run").exists()
    missing = _main(capsys, "train", "--dataset=mnist", f"--data_dir={tmp_path / 'no_data'}",
                    f"--output_dir={tmp_path / 'run'}")
    line = _one_line(missing)  # the message's lines of instructions, in one
    assert "'mnist' is not prepared" in line and "download_and_prepare" in line
    assert not (tmp_path / "run").exists()


def test_an_unusable_output_dir_is_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert _one_line(_main(capsys, "train", f"--output_dir={tmp_path / 'a_file'}")) == (
        f"keras-smart: error: --output_dir={tmp_path / 'a_file'}: is a file, not a directory"
    )
    assert _one_line(_main(capsys, "demo", f"--output_dir={tmp_path / 'a_file' / 'run'}")) == (
        f"keras-smart: error: --output_dir={tmp_path / 'a_file' / 'run'}: cannot create it: "
        f"{tmp_path / 'a_file'} is a file, not a directory"
    )
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user writes in a read-only (0500) directory (root)")
        assert "Permission denied" in _one_line(_main(capsys, "train", f"--output_dir={locked / 'run'}"))
        assert not any(locked.iterdir())
    finally:
        locked.chmod(0o700)


def test_eps_beyond_the_input_range_is_refused_before_anything_is_written(tmp_path, capsys):
    assert "eps" in _one_line(_main(capsys, "train", "--eps=1.5", f"--output_dir={tmp_path / 'run'}"))
    assert not (tmp_path / "run").exists()
    fake_run = tmp_path / "fake_run"  # evaluate checks --eps against the run's settings before it loads the model
    fake_run.mkdir()
    (fake_run / "config.json").write_text(cli.TrainSettings().to_json())
    (fake_run / "model.keras").write_text("")
    assert "eps" in _one_line(_main(capsys, "evaluate", "--eps=1.5", f"--run_dir={fake_run}"))
    assert not (fake_run / "report").exists()


def test_flag_and_command_errors_are_one_line(refused, capsys):
    assert "Unknown command line flag 'epochz'" in _one_line(refused["unknown_flag"])
    assert _one_line(_main(capsys, "frob")) == (
        "keras-smart: error: unknown command 'frob': choose one of train, evaluate, export, demo (keras-smart --help)"
    )
    assert "--output_dir is required" in _one_line(_main(capsys, "train"))
    assert "--density takes numbers" in _one_line(_main(capsys, "train", "--density=a", "--output_dir=x"))


def test_keras_smart_debug_raises_every_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("KERAS_SMART_DEBUG", "1")
    with pytest.raises(cli.OutputDirError, match="is a file"):  # out of app.run, with its traceback
        _main(capsys, "train", f"--output_dir={tmp_path / 'a_file'}")


def test_ctrl_c_is_one_line_with_status_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    for command in ("train", "evaluate", "export"):
        monkeypatch.setattr(runs, command, interrupted)
    monkeypatch.setattr(digits_demo, "demo", interrupted)
    result = _main(capsys, "train", f"--output_dir={tmp_path / 'run'}")
    assert _one_line(result, returncode=130) == (
        "keras-smart: interrupted before the first epoch ended; nothing was kept (run the same command again to "
        "start over)"
    )
    assert _one_line(_main(capsys, "evaluate", f"--run_dir={tmp_path}"), returncode=130) == "keras-smart: interrupted"
    assert _one_line(_main(capsys, "demo"), returncode=130) == "keras-smart: interrupted"


def test_help_lists_the_subcommands(refused, capsys):
    result = refused["help"]
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for name, text in cli.COMMAND_HELP.items():
        assert f"  {name:<9} {text}" in result.stdout.splitlines()
    assert "--output_dir" in result.stdout and "KERAS_SMART_DEBUG=1" in result.stdout
    # No subcommand: the same usage, on stderr, status 2; `keras-smart help` is --help.
    assert cli.main(["keras-smart"]) == 2
    assert capsys.readouterr().err == commands._usage() == result.stdout
    assert cli.main(["keras-smart", "help"]) == 0 and capsys.readouterr().out == commands._usage()
    with pytest.raises(SystemExit) as exited:
        cli.run(["keras-smart", "--helpfull"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--verbosity" in out and "--output_dir" in out, "every flag, absl's too"


@pytest.mark.slow
def test_ctrl_c_during_train_is_one_line_and_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    with open(tmp_path / "stdout.txt", "w") as stdout:  # Keras' progress bars: a file, not a pipe to fill
        process = _start(
            "train", f"--output_dir={run}", "--epochs=1000", "--max_examples=64", "--attack_steps=1",
            "--mask_warmup=0", "--eps_warmup=0", "--tradeoff_mode=switch", stdout=stdout, stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # also when pytest runs with it ignored
        )
        try:
            history, deadline = run / "history.csv", time.monotonic() + 300
            while not (history.exists() and len(history.read_text().splitlines()) >= 2):  # an epoch has ended
                assert process.poll() is None and time.monotonic() < deadline, "train ended or hung before epoch 1"
                time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    result = subprocess.CompletedProcess(process.args, process.returncode, "", err)
    assert _one_line(result, returncode=130) == (
        "keras-smart: interrupted; run the same command again to resume from the last finished epoch's checkpoint "
        f"({run / 'backup'})"
    )
    assert (run / "config.json").exists() and any((run / "backup").iterdir()) and not (run / "model.keras").exists()
