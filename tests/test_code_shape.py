"""The code keeps its shape: small modules and functions, private Keras APIs only in `_compat`, public examples."""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keras_smart"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80  # code lines: from `def` to the end, docstring excluded

# `obj._name` on anything but self/cls: a private attribute of someone else's object.
_PRIVATE_ACCESS = re.compile(r"[\w)\]]\._[a-zA-Z]")
_OWN_PRIVATE = re.compile(r"(?<![\w.])(self|cls)\._[a-zA-Z]\w*")


def _package_files():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _code_lines(node):
    lines = node.end_lineno - node.lineno + 1
    if ast.get_docstring(node, clean=False) is not None:
        docstring = node.body[0]
        lines -= docstring.end_lineno - docstring.lineno + 1
    return lines


@pytest.mark.parametrize("path", _package_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name} holds more than one concept: split it"
    long = [
        f"{node.name} ({_code_lines(node)} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} code lines in {path.name}: {long}"


def test_private_keras_apis_live_only_in_compat():
    found = []
    for path in _package_files():
        if path.name == "_compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if "keras.src" in code or "tf_keras.src" in code or _PRIVATE_ACCESS.search(_OWN_PRIVATE.sub("", code)):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "private APIs outside keras_smart/_compat.py:\n" + "\n".join(found)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_use_only_public_names(path):
    tree = ast.parse(path.read_text())
    private = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if (isinstance(node, ast.ImportFrom) and any(a.name.startswith("_") for a in node.names))
        or (isinstance(node, (ast.Import, ast.ImportFrom)) and "._" in ast.unparse(node))
        or (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"))
    ]
    assert not private, f"{path.name} uses private names: {private}"
