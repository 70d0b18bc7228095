"""No pickle (or any other code-executing deserialiser) anywhere in the package (issue 9, part 2).

Every Python file under ``python/convnetvae`` is parsed and its syntax tree searched, so comments
and docstrings that mention pickle do not count but every import and call does. The checker is
tested on bad snippets too, so this test can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "convnetvae"

BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                  "marshal", "pickletools", "copyreg"}
BANNED_CALLS = {"read_pickle", "to_pickle", "read_hdf", "HDFStore", "unsafe_load", "full_load"}
BANNED_BUILTINS = {"eval", "exec"}  # as bare calls only: ``module.eval()`` is fine


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def violations(source: str, filename: str = "<string>") -> list[str]:
    """Lines of ``source`` that import or call a code-executing deserialiser."""
    tree = ast.parse(source, filename=filename)
    out = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in BANNED_MODULES:
                    out.append(f"{where}: import {a.name}")
        elif isinstance(node, ast.ImportFrom):
            mod = (node.module or "").split(".")[0]
            if mod in BANNED_MODULES:
                out.append(f"{where}: from {node.module} import ...")
            for a in node.names:
                if a.name in BANNED_MODULES | {"read_pickle", "load_pickle"} or (
                        mod == "torch" and a.name == "load"):
                    out.append(f"{where}: from {node.module} import {a.name}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if last in BANNED_CALLS or (isinstance(node.func, ast.Name)
                                        and node.func.id in BANNED_BUILTINS):
                out.append(f"{where}: call {name}()")
            if name in ("torch.load",) or name.endswith(".torch.load"):
                if not _is_true(_kw(node, "weights_only")):
                    out.append(f"{where}: torch.load without weights_only=True")
            if last == "load" and name.split(".")[0] in ("np", "numpy"):
                if _is_true(_kw(node, "allow_pickle")):
                    out.append(f"{where}: np.load(allow_pickle=True)")
            if name in ("yaml.load",) and _kw(node, "Loader") is None:
                out.append(f"{where}: yaml.load without a safe Loader")
            if _is_true(_kw(node, "allow_pickle")):
                out.append(f"{where}: {name}(allow_pickle=True)")
    return out


@pytest.mark.parametrize("snippet", [
    "import pickle",
    "import cloudpickle as cp",
    "from joblib import load",
    "from pandas import read_pickle",
    "import torch\ntorch.load('m.pt')",
    "import torch\ntorch.load('m.pt', weights_only=False)",
    "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
    "import pandas as pd\npd.read_pickle('x')",
    "df.to_pickle('x')",
    "import yaml\nyaml.load(open('c.yml'))",
    "eval(user_text)",
    "from torch import load",
])
def test_checker_catches_unsafe_code(snippet):
    assert violations(snippet), snippet


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load('m.pt', weights_only=True)",
    "import numpy as np\nnp.load('a.npy')",
    "from safetensors.torch import load_file\nload_file('m.safetensors')",
    "import json\njson.loads('{}')",
    "module.eval()",
    "# import pickle (a comment)\nx = 'pickle.load'",
    "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
])
def test_checker_accepts_safe_code(snippet):
    assert not violations(snippet), snippet


def test_package_never_unpickles():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20, f"package not found under {PACKAGE}"
    found = []
    for f in files:
        found += violations(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE.parent)))
    assert not found, "code-executing deserialisation in the package:\n" + "\n".join(found)
