"""The run directory: its layout, the checks made before anything is written, and its one first write.

A run directory holds `config.json` (the `TrainSettings`), `model.keras`
(written when training finishes), `backup/` (BackupAndRestore: an interrupted
run resumes from its last finished epoch), `logs/` (TensorBoard) and
`history.csv`; `evaluate` adds `report/` and `export` adds `bundle/`.

The checks write nothing, so that a refused command leaves no trace; `prepare`
is the first write, and hands back how to undo it.
"""

import dataclasses
import errno
import os
import pathlib
import shutil

from keras_smart.cli import settings as settings_lib

CONFIG = "config.json"
MODEL = "model.keras"
BACKUP = "backup"
LOGS = "logs"
HISTORY = "history.csv"
REPORT = "report"
BUNDLE = "bundle"

NEW, RESUME, OVERWRITE = "new", "resume", "overwrite"  # what `plan` says `train` will do


class RunExistsError(FileExistsError):
    """The output directory holds a finished run, or an unfinished one with other settings."""


class OutputDirError(OSError):
    """A run (or report, bundle) directory cannot be used: it is a file, lies under one, or cannot be written."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def check_output_dir(path):
    """Raises OutputDirError unless `path` is a directory this process may write in, or one it may create.

    Writes nothing. (As root, permission bits do not stop writes, and os.access says so.)

    Example:
      >>> import tempfile, pathlib
      >>> from keras_smart.cli import run_dir
      >>> root = pathlib.Path(tempfile.mkdtemp())
      >>> run_dir.check_output_dir(root / "runs" / "smart")  # may be created: no error
      >>> (root / "a_file").write_text("")
      0
      >>> run_dir.check_output_dir(root / "a_file" / "run")
      Traceback (most recent call last):
      ...
      keras_smart.cli.run_dir.OutputDirError: .../a_file/run: cannot create it: .../a_file is a file, not a directory
    """
    path = pathlib.Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputDirError(path, "is a file, not a directory")
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise OutputDirError(path, f"cannot write in it: {os.strerror(errno.EACCES)}")
        return
    if path.is_symlink():
        raise OutputDirError(path, "is a broken symbolic link")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputDirError(path, f"cannot create it: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(path, f"cannot create it in {parent}: {os.strerror(errno.EACCES)}")


def read_settings(config_path):
    """The TrainSettings saved in a run's config.json; ValueError (naming the file) when it is not one."""
    try:
        return settings_lib.TrainSettings.from_json(pathlib.Path(config_path).read_text())
    except (ValueError, TypeError, KeyError) as e:  # bad JSON, unknown or missing keys, invalid values
        raise ValueError(f"{config_path} is not a valid keras-smart config: {e}") from None


def is_run(path):
    """Whether `path` holds a keras-smart run (a config.json or a model.keras)."""
    path = pathlib.Path(path)
    return (path / CONFIG).exists() or (path / MODEL).exists()


def plan(run_dir, settings, overwrite):
    """What `train` will do in `run_dir`: NEW, RESUME or OVERWRITE. Writes nothing.

    Raises:
      RunExistsError: `run_dir` holds a finished run, or an unfinished run
        with other settings, and `overwrite` is False; or it is a non-empty
        directory that is not a keras-smart run (also with `overwrite`).

    Example:
      >>> import tempfile
      >>> from keras_smart.cli import TrainSettings, run_dir
      >>> run_dir.plan(tempfile.mkdtemp(), TrainSettings(), overwrite=False)
      'new'
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir.is_dir() and any(run_dir.iterdir())):
        return NEW
    if not is_run(run_dir):
        raise RunExistsError(
            f"{run_dir} is not empty and is not a keras-smart run (no config.json). Choose another --output_dir"
            + (" (--overwrite replaces only keras-smart runs)." if overwrite else ".")
        )
    if overwrite:
        return OVERWRITE
    if (run_dir / MODEL).exists():
        raise RunExistsError(
            f"{run_dir} holds a finished run (model.keras). Choose another --output_dir, or pass "
            "--overwrite to replace it."
        )
    try:
        previous = read_settings(run_dir / CONFIG)
    except ValueError as e:
        raise RunExistsError(f"{e}. Choose another --output_dir, or pass --overwrite to replace that run.") from None
    if previous != settings:
        before, now = dataclasses.asdict(previous), dataclasses.asdict(settings)
        changed = sorted(key for key, value in now.items() if before[key] != value)
        raise RunExistsError(
            f"{run_dir} holds an unfinished run with other settings ({', '.join(changed)}). Run the same "
            "command to resume it, choose another --output_dir, or pass --overwrite."
        )
    return RESUME


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def prepare(run_dir, settings, planned):
    """Makes `run_dir` ready for `planned` (what `plan` returned) and writes config.json.

    Returns:
      A function that removes what this call created (the directories it made,
      or else the entries it wrote into an empty or replaced directory), or
      None when resuming (an interrupted run's files are never removed).

    Raises:
      OutputDirError: the directory cannot be created or written (what this
        call wrote is removed first).
    """
    if planned == RESUME:
        return None
    run_dir = pathlib.Path(run_dir)
    created = None  # the outermost directory this call creates
    for path in (run_dir.absolute(), *run_dir.absolute().parents):
        if path.exists():
            break
        created = path

    def undo():
        if created is not None:
            _remove(created)
        elif run_dir.is_dir():
            for entry in run_dir.iterdir():  # the directory was empty or replaced: its entries are ours
                _remove(entry)

    try:
        if planned == OVERWRITE:
            for entry in run_dir.iterdir():  # the directory itself (its owner, permissions) stays
                _remove(entry)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG).write_text(settings.to_json())
    except OSError as e:
        undo()
        raise OutputDirError(run_dir, f"cannot create or write it: {e.strerror or e}") from e
    return undo


def finished_settings(run_dir):
    """A trained run's settings, read before its model is loaded (to check a request against them).

    Raises:
      FileNotFoundError: `run_dir` has no model.keras (not trained, or not
        finished) or no config.json.
      ValueError: its config.json is not a valid one.
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / MODEL).exists():
        raise FileNotFoundError(
            f"{run_dir} has no model.keras: train first (keras-smart train --output_dir={run_dir}), or let an "
            "interrupted run finish by running the same train command again."
        )
    if not (run_dir / CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} has a model.keras but no config.json: it is not a keras-smart run.")
    return read_settings(run_dir / CONFIG)


def interrupted_train_message(run_dir):
    """What an interrupted `train` left in `run_dir`, said to the user."""
    run_dir = pathlib.Path(run_dir)
    if (run_dir / MODEL).exists():
        return f"interrupted; the run in {run_dir} had finished (model.keras)"
    if (run_dir / CONFIG).exists():
        return (f"interrupted; run the same command again to resume from the last finished epoch's checkpoint "
                f"({run_dir / BACKUP})")
    return "interrupted before the first epoch ended; nothing was kept (run the same command again to start over)"
