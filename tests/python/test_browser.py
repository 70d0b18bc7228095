"""The workbench in a real browser: Voila on 127.0.0.1, Debian's chromium driven by Playwright.

The test starts Voila on a free local port with a notebook that builds a Workbench on a small
simulated dataset and opens it in headless chromium. It presses Train and, while training runs,
opens another panel and computes genome tracks (the notebook does not freeze, the training
monitor stays visible); asks for two regions in quick succession (only the last is shown, with
its inputs in the caption); stops training, sees the embedding appear, draws a lasso with the
mouse and saves the selection as an obs column, then colours by it; changes the colour several
times quickly (the last choice wins). Screenshots go to test-output/browser/. Server, kernel and
browser are started and stopped here.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
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
adata = convnetvae.simulate(n_cells=300, n_bins=400, n_types=3, n_batches=2, n_chromosomes=2,
                           seed=0)
wb = Workbench(adata)
wb.trainer.panel.set_values(max_epochs=500, batch_size=32, early_stopping=False)
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


def _caption_text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def _train_and_click_elsewhere(page, out: Path) -> None:
    """Press Train; while it runs, open another panel and compute genome tracks."""
    from playwright.sync_api import expect

    status = page.locator(".convnetvae-train-status")
    page.locator(".convnetvae-panel-train button.convnetvae-run").click()
    expect(status).to_contain_text("epoch", timeout=60_000)
    # open the Evaluate panel: the training monitor stays in view above the panels
    page.locator(".convnetvae-section", has_text="Evaluate").locator(
        ".jupyter-widget-Collapse-header, .p-Collapse-header, .lm-Collapse-header").first.click()
    expect(page.locator(".convnetvae-panel-evaluate")).to_be_visible(timeout=10_000)
    expect(page.locator(".convnetvae-train-monitor")).to_be_visible()
    page.get_by_text("Genome tracks", exact=True).click()
    page.locator("button.convnetvae-show-tracks").click()
    expect(page.locator(".convnetvae-tracks img.convnetvae-tracks-image")).to_be_visible(
        timeout=60_000)
    # the tracks came back while training was still running
    assert "finished" not in status.inner_text() and "stopped" not in status.inner_text()
    assert "region='chr1:" in _caption_text(page, ".convnetvae-tracks .convnetvae-caption")
    page.screenshot(path=str(out / "01-tracks-while-training.png"), full_page=True)


def _quick_regions(page) -> None:
    """Two regions in quick succession (Enter runs each): only the last one ends up shown."""
    from playwright.sync_api import expect

    box = page.locator(".convnetvae-region input")
    for region in ("chr1:0-500000", "chr2:0-800000"):
        box.fill(region)
        box.press("Enter")
    caption = page.locator(".convnetvae-tracks .convnetvae-caption")
    expect(caption).to_contain_text("region='chr2:0-800000'", timeout=60_000)
    expect(page.locator("button.convnetvae-show-tracks")).to_be_enabled(timeout=60_000)
    page.wait_for_timeout(1500)  # nothing older arrives later
    assert "chr2:0-800000" in caption.inner_text()
    assert "chr1:0-500000" not in caption.inner_text()


def _lasso(page, out: Path) -> None:
    """Draw a lasso with the mouse, save it as obs['picked'], colour by it."""
    from playwright.sync_api import expect

    scatter = page.locator(".convnetvae-scatter")
    page.locator('.convnetvae-scatter button[title="Activate lasso selection"]').click()
    canvas = scatter.locator("canvas").first
    b = canvas.bounding_box()
    cx, cy, rx, ry = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, b["width"] * 0.3, \
        b["height"] * 0.3
    page.mouse.move(cx - rx, cy - ry)
    page.mouse.down()
    # end short of the start: a release where the press was is a click, which selects one point
    corners = ((cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry / 2))
    x0, y0 = cx - rx, cy - ry
    for x1, y1 in corners:  # a hand's pace: the lasso samples the pointer every few ms
        for t in np.linspace(0.1, 1.0, 10):
            page.mouse.move(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
            page.wait_for_timeout(25)
        x0, y0 = x1, y1
    page.mouse.up()
    info = page.locator(".convnetvae-selection-info")
    expect(info).to_have_text(re.compile(r"^\s*[\d,]+ cells? selected"), timeout=30_000)
    n_selected = int(info.inner_text().split()[0].replace(",", ""))
    assert n_selected >= 20, f"the lasso caught only {n_selected} cells"
    page.locator(".convnetvae-embedding input[type=text]").first.fill("picked")
    page.locator("button.convnetvae-save-selection").click()
    expect(info).to_contain_text("written to obs['picked']", timeout=30_000)
    assert info.inner_text().startswith(f"{n_selected:,} cells written"), info.inner_text()
    page.locator(".convnetvae-color select").select_option("picked")
    caption = page.locator(".convnetvae-embedding-caption")
    expect(caption).to_contain_text("coloured by picked (2 groups)", timeout=30_000)
    page.screenshot(path=str(out / "03-lasso-saved.png"), full_page=True)


@pytest.mark.browser
@pytest.mark.timeout(480)
def test_workbench_in_voila_never_freezes_and_lasso_lands_in_obs(tmp_path):
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
        _wait_listening(port, server, timeout=90)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url, timeout=120_000)
                expect(page.locator(".convnetvae-workbench")).to_be_visible(timeout=120_000)
                expect(page.locator(".convnetvae-embedding")).to_contain_text(
                    "no embedding yet")
                _train_and_click_elsewhere(page, OUT)
                _quick_regions(page)
                page.locator("button.convnetvae-stop").click()
                expect(page.locator(".convnetvae-train-status")).to_contain_text(
                    "stopped after", timeout=60_000)
                # the embedding after training: clusters, a WebGL scatter
                expect(page.locator(".convnetvae-panel-embed_and_cluster")).to_contain_text(
                    "clusters", timeout=120_000)
                page.get_by_text("Embedding", exact=True).first.click()
                expect(page.locator(".convnetvae-scatter canvas").first).to_be_visible(
                    timeout=30_000)
                page.wait_for_function(
                    "() => { const c = document.querySelector('.convnetvae-scatter canvas');"
                    " return c && c.width > 300; }", timeout=30_000)
                page.screenshot(path=str(OUT / "02-trained.png"), full_page=True)
                _lasso(page, OUT)
                # quick successive colour changes: the last one is what is shown
                sel = page.locator(".convnetvae-color select")
                for col in ("batch", "cell_type", "convnetvae_clusters"):
                    sel.select_option(col)
                expect(page.locator(".convnetvae-embedding-caption")).to_contain_text(
                    "coloured by convnetvae_clusters", timeout=30_000)
                page.wait_for_timeout(1000)
                assert "convnetvae_clusters" in page.locator(
                    ".convnetvae-embedding-caption").inner_text()
                page.screenshot(path=str(OUT / "04-coloured-by-cluster.png"), full_page=True)
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
    for name in ("01-tracks-while-training.png", "02-trained.png", "03-lasso-saved.png",
                 "04-coloured-by-cluster.png"):
        assert (OUT / name).stat().st_size > 10_000
    assert elapsed < 450, f"browser test took {elapsed:.0f} s"
