"""The notebooks as a person uses them: JupyterLab in Debian's Chromium, driven by Playwright.

Papermill never clicks; these tests do. They render the model picker, pick a model that is not
the default, run the following cells, and check that the plan and the container arguments follow
the choice. Screenshots of each state are kept under the test's output folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nbhelpers.widgets import CONFIRM_VARIABLE, machine_options
from tests.conftest import FAKE_TOKEN

CHROMIUM = "/usr/bin/chromium"
PLAN = "plan = nbhelpers.plan_deployment("  # the first cell after the picker
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("NBHELPERS_BROWSER_ARTIFACTS", ROOT / "runs" / "browser-tests"))
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason="Debian's chromium is not installed (make test installs it)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a token, over a copy of the notebooks, against an emulator."""
    from nbhelpers import emulator as emulator_module

    work = tmp_path_factory.mktemp("lab")
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(notebook, work / notebook.name)
    running = emulator_module.start(state_file=work / "emulator.json")
    settings = work / "user-settings"
    # Render every cell (JupyterLab otherwise renders only those near the viewport, so reading
    # a cell's output would depend on scrolling) and skip the news pop-up.
    for plugin, values in (("@jupyterlab/notebook-extension/tracker", {"windowingMode": "none"}),
                           ("@jupyterlab/apputils-extension/notification",
                            {"fetchNews": "false"})):
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "NBHELPERS_BACKEND": "emulator", "NBHELPERS_EMULATOR_URL": running.url,
           "NBHELPERS_STATE_DIR": str(work / "state"), "NBHELPERS_RUN_ID": "browser",
           "HF_TOKEN": FAKE_TOKEN, "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"),
           CONFIRM_VARIABLE: "1"}  # "Run all" deploys here, as if CONFIRM_DEPLOY were ticked
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={work}", f"--LabApp.user_settings_dir={settings}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                running.stop()
                pytest.fail("JupyterLab did not start")
            time.sleep(0.5)
    yield base, token
    server.terminate()
    server.wait(timeout=20)
    running.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        yield chromium
        chromium.close()


class Session:
    """One notebook open in JupyterLab; every step leaves a screenshot."""

    def __init__(self, page, name: str):
        self.page, self.name = page, name
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shot(self, label: str) -> Path:
        path = ARTIFACTS / f"{Path(self.name).stem}-{label}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    def expect(self, condition: bool, label: str, what: str) -> None:
        if not condition:
            path = self.shot(f"FAILED-{label}")
            pytest.fail(f"{what} (screenshot: {path})")

    def command(self, name: str) -> None:
        """Runs a JupyterLab command through the command palette, as a keyboard user would."""
        self.page.keyboard.press("Control+Shift+C")
        palette = self.page.locator(".lm-CommandPalette-input")
        palette.fill(name)
        self.page.locator(".lm-CommandPalette-item", has_text=name).first.click()

    def wait_idle(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        time.sleep(1)
        while time.monotonic() < deadline:
            busy = self.page.locator(".jp-InputPrompt", has_text="[*]").count()
            status = self.page.locator(".jp-Notebook-ExecutionIndicator[data-status='busy']")
            if busy == 0 and status.count() == 0:
                return
            time.sleep(0.5)
        self.expect(False, "busy", f"cells still running after {timeout_s}s")

    def cell(self, source_text: str):
        """The code cell whose source contains `source_text`."""
        cell = self.page.locator(".jp-CodeCell").filter(
            has=self.page.locator(".jp-InputArea-editor", has_text=source_text)).first
        self.expect(cell.count() == 1, "find-cell", f"no code cell contains {source_text!r}")
        return cell

    def cell_output(self, source_text: str) -> str:
        cell = self.cell(source_text)
        cell.scroll_into_view_if_needed()
        return cell.locator(".jp-OutputArea").inner_text()


def _open(browser, lab, name: str) -> Session:
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # A workspace of its own, reset, so only this notebook is open.
    page.goto(f"{base}/lab/workspaces/{Path(name).stem}/tree/{name}?token={token}&reset")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60000)
    select_kernel = page.locator(".jp-Dialog button", has_text="Select")
    try:  # a notebook that has never run asks which kernel to start, as a person sees it
        select_kernel.first.click(timeout=10000)
    except Exception:
        pass
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60000)
    return Session(page, name)


def _pick_and_rerun(session: Session, choice: str, expected_options: list[str]) -> None:
    """Runs the notebook as is, then picks `choice` and re-runs the cells below the picker."""
    session.command("Run All Cells")
    session.wait_idle()
    select = session.page.locator(".widget-dropdown select").first
    session.expect(select.count() == 1, "picker", "the model picker did not render")
    select.scroll_into_view_if_needed()
    session.shot("1-ran-with-default")
    options = select.locator("option").all_inner_texts()
    session.expect(options == expected_options, "options",
                   f"picker options {options} differ from {expected_options}")
    select.select_option(choice)
    select.scroll_into_view_if_needed()
    session.shot("2-picked-another-model")
    session.cell(PLAN).locator(".jp-InputPrompt").click()  # select the cell after the picker
    session.command("Run Selected Cell and All Below")
    session.wait_idle()
    session.shot("3-reran-below-the-picker")


def test_llama31_picker_changes_the_plan_and_the_container(browser, lab):
    session = _open(browser, lab, "01_deploy_llama31_text.ipynb")
    _pick_and_rerun(session, "Llama-3.1-70B-Instruct", [
        "Llama-3.1-8B", "Llama-3.1-8B-Instruct", "Llama-3.1-70B", "Llama-3.1-70B-Instruct",
        "Llama-3.1-405B-FP8", "Llama-3.1-405B-Instruct-FP8"])
    shown = session.cell_output(PLAN)
    session.expect("model:      Llama-3.1-70B-Instruct" in shown, "plan",
                   f"the plan does not show the picked model: {shown[:300]}")
    session.expect("a3-highgpu-4g (4 x H100 80GB)" in shown, "hardware",
                   f"the plan does not show the 70B hardware: {shown[:300]}")
    session.expect("--model=meta-llama/Llama-3.1-70B-Instruct" in shown
                   and "--tensor-parallel-size=4" in shown, "args",
                   f"the container arguments do not follow the pick: {shown[:400]}")
    deployed = session.cell_output("nbhelpers.deploy(session, plan)")
    session.expect("Llama-3.1-70B-Instruct" in deployed, "deploy",
                   f"the deploy cell did not deploy the picked model: {deployed[-300:]}")
    session.cell(PLAN).scroll_into_view_if_needed()
    session.shot("4-plan-and-arguments")
    session.page.close()


def test_llama32_picker_and_inline_image(browser, lab):
    session = _open(browser, lab, "02_deploy_llama32_multimodal.ipynb")
    _pick_and_rerun(session, "Llama-3.2-90B-Vision-Instruct", [
        "Llama-3.2-1B", "Llama-3.2-1B-Instruct", "Llama-3.2-3B", "Llama-3.2-3B-Instruct",
        "Llama-3.2-11B-Vision", "Llama-3.2-11B-Vision-Instruct", "Llama-3.2-90B-Vision",
        "Llama-3.2-90B-Vision-Instruct"])
    shown = session.cell_output(PLAN)
    session.expect("Llama-3.2-90B-Vision-Instruct" in shown
                   and "a3-highgpu-8g (8 x H100 80GB)" in shown
                   and "--max-num-seqs=12" in shown and "--tensor-parallel-size=8" in shown,
                   "plan", f"the plan does not follow the pick: {shown[:400]}")
    image = session.page.locator(".jp-OutputArea-output img")
    session.expect(image.count() >= 1, "image", "the image was not rendered inline")
    width = image.first.evaluate("img => img.naturalWidth")
    session.expect(width == 800, "image-size", f"the inline image is {width}px wide, not 800")
    answer = session.cell_output("predict_image(")
    session.expect("an image of 800x600 pixels" in answer, "answer",
                   f"the vision answer does not name the image: {answer[-300:]}")
    image.first.scroll_into_view_if_needed()
    session.shot("4-image-inline")
    session.page.close()


def _option_texts(select) -> list[str]:
    """A select's option labels as the widget was given them (it renders spaces as NBSP)."""
    return [text.replace("\xa0", " ") for text in select.locator("option").all_inner_texts()]


def test_machine_picker_follows_the_model_and_offers_only_machines_it_starts_on(browser, lab):
    session = _open(browser, lab, "01_deploy_llama31_text.ipynb")
    session.command("Run All Cells")
    session.wait_idle()
    selects = session.page.locator(".widget-dropdown select")
    session.expect(selects.count() == 2, "pickers", "the model and machine pickers did not render")
    model, machine = selects.nth(0), selects.nth(1)
    machine.scroll_into_view_if_needed()
    session.shot("1-machines-for-8b")
    rendered_8b = machine.locator("option").all_inner_texts()
    too_small = next(o for o in rendered_8b if o.startswith("g2-standard-8\xa0"))  # 1 x L4
    offered = _option_texts(machine)
    expected = [label for label, _ in machine_options("Llama-3.1-8B-Instruct")]
    session.expect(offered == expected, "8b-options",
                   f"machine options for 8B {offered} differ from {expected}")
    model.select_option("Llama-3.1-70B-Instruct")
    expected = [label for label, _ in machine_options("Llama-3.1-70B-Instruct")]
    deadline = time.monotonic() + 30
    while _option_texts(machine) != expected and time.monotonic() < deadline:
        time.sleep(0.5)  # the kernel replaces the options over the widget's comm
    offered = _option_texts(machine)
    session.shot("2-machines-for-70b")
    session.expect(offered == expected, "70b-options",
                   f"machine options did not follow the model: {offered} vs {expected}")
    session.expect(offered[0].startswith("a3-highgpu-4g (4 x H100 80GB)")
                   and any(o.startswith("g2-standard-96 (8 x L4)") for o in offered), "tutorial",
                   f"the 70B choices lack the tutorial's machines: {offered}")
    session.expect(machine.input_value() != "" and not any("g2-standard-8 " in o for o in offered),
                   "invalid", f"a machine too small for 70B is offered: {offered}")
    try:  # a machine 70B does not start on cannot be chosen: it is no option
        machine.select_option(label=too_small, timeout=2000)  # an 8B choice, as rendered
        chosen_invalid = True
    except Exception:
        chosen_invalid = False
    session.expect(not chosen_invalid, "refused", "g2-standard-8 could be chosen for 70B")
    label = next(o for o in machine.locator("option").all_inner_texts()
                 if o.startswith("g2-standard-96"))  # as rendered
    machine.select_option(label=label)
    session.cell(PLAN).locator(".jp-InputPrompt").click()
    session.command("Run Selected Cell and All Below")
    session.wait_idle()
    shown = session.cell_output(PLAN)
    session.expect("g2-standard-96 (8 x L4)" in shown and "--tensor-parallel-size=8" in shown,
                   "plan", f"the plan does not follow the picked machine: {shown[:400]}")
    session.shot("3-plan-on-8-l4")
    session.page.close()
