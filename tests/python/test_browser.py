"""The workbench in a real browser: Voila on 127.0.0.1, Debian's chromium driven by Playwright.

The test starts Voila on a free local port with a notebook that builds a Workbench on a tiny
simulated dataset, opens it in headless chromium, presses Train, waits for the embedding image,
changes the colour column, and saves screenshots under test-output/browser/. Server, kernel and
browser are started and stopped here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

NOTEBOOK = '''\
import os
import convnetvae
from convnetvae.widgets import Workbench

with open(os.environ["CONVNETVAE_TEST_KERNEL_PID"], "w") as fh:
    fh.write(str(os.getpid()))
adata = convnetvae.simulate(n_cells=200, n_bins=300, n_types=3, n_batches=2, seed=0)
wb = Workbench(adata)
wb.trainer.panel.set_values(max_epochs=3, batch_size=64, early_stopping=False)
wb.panels["Embed & cluster"].set_values(layout="umap")
wb
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"voila exited early with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.25)
    raise AssertionError(f"voila did not listen on 127.0.0.1:{port} within {timeout} s")


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_train_in_voila_and_see_the_embedding(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (make setup installs it)")
    from playwright.sync_api import expect, sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    nb_path = tmp_path / "workbench_app.ipynb"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3",
                                                           "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK)]
    nbformat.write(nb, nb_path)
    pid_file = tmp_path / "kernel.pid"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ)
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "CONVNETVAE_TEST_KERNEL_PID": str(pid_file),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_PLATFORM_DIRS": "1",
    })
    log = open(tmp_path / "voila.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "voila", str(nb_path), "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", "--show_tracebacks=True",
         "--Voila.tornado_settings={'headers': {}}"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    t_start = time.monotonic()
    try:
        _wait_listening(port, server, timeout=60)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url, timeout=90_000)
                workbench = page.locator(".convnetvae-workbench")
                expect(workbench).to_be_visible(timeout=90_000)
                expect(page.locator(".convnetvae-embedding")).to_contain_text(
                    "no embedding yet")
                page.screenshot(path=str(OUT / "01-loaded.png"), full_page=True)

                train_button = page.locator(".convnetvae-panel-train button.convnetvae-run")
                expect(train_button).to_be_visible(timeout=10_000)
                train_button.click()
                # the loss curve and progress update while training runs in the background
                image = page.locator(".convnetvae-embedding img.convnetvae-embedding-image")
                expect(image).to_be_visible(timeout=120_000)
                expect(page.locator(".convnetvae-train-status")).to_contain_text(
                    "finished after 3 epochs", timeout=30_000)
                page.wait_for_function(
                    "() => { const i = document.querySelector("
                    "'.convnetvae-embedding img.convnetvae-embedding-image');"
                    " return i && i.complete && i.naturalWidth > 300; }", timeout=30_000)
                loss = page.locator("img.convnetvae-loss")
                assert loss.evaluate("i => i.naturalWidth") > 100
                expect(page.locator(".convnetvae-panel-embed_and_cluster")).to_contain_text(
                    "clusters", timeout=30_000)
                expect(page.locator(".convnetvae-panel-embed_and_cluster")).to_contain_text(
                    "ARI")
                page.screenshot(path=str(OUT / "02-trained.png"), full_page=True)

                # colour by another column: the browser asks the kernel, a new PNG comes back
                before = image.get_attribute("src")
                page.locator(".convnetvae-embedding select").nth(1).select_option("cell_type")
                page.wait_for_function(
                    "(old) => { const i = document.querySelector("
                    "'.convnetvae-embedding img.convnetvae-embedding-image');"
                    " return i && i.src !== old && i.complete && i.naturalWidth > 300; }",
                    arg=before, timeout=30_000)
                page.screenshot(path=str(OUT / "03-coloured-by-cell-type.png"), full_page=True)
                assert not errors, f"JavaScript errors on the page: {errors}"
            finally:
                browser.close()
    finally:
        server.send_signal(signal.SIGINT)  # Jupyter servers shut their kernels down on SIGINT
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        if pid_file.exists():
            _stop(int(pid_file.read_text()))
        log.close()
    elapsed = time.monotonic() - t_start
    for name in ("01-loaded.png", "02-trained.png", "03-coloured-by-cell-type.png"):
        assert (OUT / name).stat().st_size > 10_000
    assert elapsed < 150, f"browser test took {elapsed:.0f} s"
