"""All-or-nothing writes: a file or directory appears under its name only once it is complete and checked."""

import os
import shutil
import tempfile


def write_checked(data, path, check):
    """Writes `data` to `path` only if `check(temporary_path)` passes; returns what `check` returns.

    The bytes go to a temporary file beside `path`, which `check` inspects and
    which is then renamed to `path`. If `check` (or anything else) raises, the
    temporary file is deleted and an existing file at `path` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        result = check(temporary)
        set_default_mode(temporary, 0o666)  # mkstemp creates 0600; an exported file is shared like any other
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return result


def staging_directory(out_dir):
    """A new empty directory beside `out_dir` to assemble its contents in (see `move_into_place`)."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    return tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(os.path.abspath(out_dir)) + ".")


def move_into_place(staging, out_dir):
    """Renames the finished `staging` directory to `out_dir`, replacing an old `out_dir` last."""
    set_default_mode(staging, 0o777)  # mkdtemp creates 0700
    if not os.path.exists(out_dir):
        os.rename(staging, out_dir)
        return
    old = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out_dir)), prefix=".old.")
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def set_default_mode(path, mode):
    """Gives `path` the permissions a plain open()/mkdir() would: `mode` less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)
