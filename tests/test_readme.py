"""The README is a contract: its Python blocks run as written, top to bottom, in both Keras flavours."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from keras_smart import _compat

ROOT = pathlib.Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _python_blocks():
    return _BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_python_blocks():
    blocks = _python_blocks()
    assert len(blocks) >= 5, "the README's Usage section lost its ```python blocks"
    assert not any("import keras\n" in block for block in blocks), (
        "`import keras` is Keras 3 even under TF_USE_LEGACY_KERAS=1: use `from keras_smart import keras`"
    )


@pytest.mark.slow
def test_readme_python_blocks_run_in_one_interpreter(tmp_path):
    """In the flavour this suite runs (`make test` runs the suite in both)."""
    legacy = "1" if _compat.IS_LEGACY else "0"
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(_python_blocks()), encoding="utf-8")
    env = dict(os.environ)
    env.update(
        TF_USE_LEGACY_KERAS=legacy,
        TF_CPP_MIN_LOG_LEVEL="3",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        MPLBACKEND="Agg",
        # Offline: the blocks use only the embedded digits; any download attempt fails fast.
        HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="",
        http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", no_proxy="",
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, f"README blocks failed (TF_USE_LEGACY_KERAS={legacy}):\n{done.stdout[-8000:]}"
    for name in ("smart.keras", "frontier.png", "report.json", "bundle/smart.json", "bundle/labels.txt",
                 "bundle/tradeoff_000.tflite", "bundle/tradeoff_100.tflite"):
        assert (tmp_path / name).is_file(), name
