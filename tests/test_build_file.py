"""BUILD cannot rot: every Python file has a target, and every target's deps cover its imports."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
_TARGET = re.compile(r"(py_library|py_test|py_binary)\((.*?)\n\)", re.S)


def _targets():
    targets = {}
    for kind, body in _TARGET.findall((ROOT / "BUILD").read_text()):
        name = re.search(r'name = "([^"]+)"', body).group(1)
        srcs = re.findall(r'"([^"]+\.py)"', re.search(r"srcs = \[(.*?)\]", body, re.S).group(1))
        deps_match = re.search(r"deps = \[(.*?)\]", body, re.S)
        deps = re.findall(r'"(:[^"]+)"', deps_match.group(1)) if deps_match else []
        targets[name] = {"kind": kind, "srcs": srcs, "deps": deps}
    return targets


def _python_files():
    return {
        str(p.relative_to(ROOT))
        for folder in ("keras_smart", "tests", "examples", "benchmarks")
        for p in (ROOT / folder).glob("**/*.py")
    }


def _project_imports(path):
    """Files of this project that `path` imports."""

    def module_file(module):
        base = ROOT.joinpath(*module.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.exists():
                return str(candidate.relative_to(ROOT))
        return None

    found = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            # `from pkg import mod` needs mod; `from pkg import name` needs pkg.
            modules = [
                f"{node.module}.{a.name}" if module_file(f"{node.module}.{a.name}") else node.module
                for a in node.names
            ]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        for module in modules:
            if module.split(".")[0] in ("keras_smart", "tests", "examples") and module_file(module):
                found.add(module_file(module))
    found.discard(path)
    return found


def test_every_python_file_is_listed_once():
    listed = [src for t in _targets().values() for src in t["srcs"]]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert set(listed) == _python_files()


def test_test_files_are_py_tests():
    for target in _targets().values():
        for src in target["srcs"]:
            is_test = pathlib.Path(src).name.startswith("test_")
            assert (target["kind"] == "py_test") == is_test, src


def test_deps_name_existing_targets_and_cover_imports():
    targets = _targets()
    owner = {src: name for name, t in targets.items() for src in t["srcs"]}
    for name, target in targets.items():
        assert set(target["deps"]) <= {":" + n for n in targets}, name
        needed = {":" + owner[f] for src in target["srcs"] for f in _project_imports(src)}
        assert needed <= set(target["deps"]), f"{name} misses deps {sorted(needed - set(target['deps']))}"
