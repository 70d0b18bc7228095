"""Execute the Python vignettes (notebooks) with nbclient on this venv's kernel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from convnetvae.io_utils import atomic_write

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "notebooks"


def _execute(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "vignettes" / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{name} is stored with outputs: clear them before committing"
    # first, prove the kernel runs this venv's interpreter
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env_path}"
    try:
        # jupyter_client runs the "python3" kernel spec with sys.executable (this venv)
        client = NotebookClient(nb, timeout=240, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        os.environ["PATH"] = env_path
    executed = nb.cells.pop(0)
    kernel_python = executed.outputs[0]["text"].strip()
    assert Path(kernel_python).parent.resolve() == Path(sys.executable).parent.resolve(), \
        f"kernel ran {kernel_python}, not {sys.executable}"
    with atomic_write(OUT / name, "w") as fh:
        nbformat.write(nb, fh)
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append(out["text"])
            for key in ("text/plain", "text/html"):
                if key in out.get("data", {}):
                    parts.append(out["data"][key])
    return "\n".join(parts)


def _has_widget(nb: nbformat.NotebookNode) -> bool:
    return any("application/vnd.jupyter.widget-view+json" in out.get("data", {})
               for c in nb.cells for out in c.get("outputs", []))


@pytest.mark.slow
def test_getting_started_notebook_runs(tmp_path):
    nb = _execute("getting-started.ipynb", tmp_path)
    text = _text(nb)
    assert "clusters; ARI" in text and "against the true cell types" in text
    assert "(400, 600) True" in text  # rates: cells x bins, rows sum to 1
    # the UMAP figure was drawn
    assert any("image/png" in out.get("data", {}) for c in nb.cells
               for out in c.get("outputs", []))


@pytest.mark.slow
def test_workbench_notebook_runs(tmp_path):
    nb = _execute("workbench.ipynb", tmp_path)
    text = _text(nb)
    assert _has_widget(nb)
    assert "finished after 3 epochs" in text
    assert "'ARI'" in text and "'NMI'" in text
    assert "X_convnetvae_umap" in text  # the UMAP layout of the latent space is shown
    assert "cells above" in text
    assert "cluster 0 by hand" in text and "wrote" in text  # a selection in obs, exported
    assert "overall" in text  # the scIB table
