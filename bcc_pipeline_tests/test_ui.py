"""The Dagster UI end to end, as a user drives it: `dagster dev` on 127.0.0.1 with a throwaway
DAGSTER_HOME, training_job launched from the launchpad in headless Chromium, and the report's
accuracy read back from the asset page. Skipped, with the reason, where Chromium cannot start."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).parent / "dagster")
LOCATION = "bcc_pipeline"  # workspace.yaml's location_name
CHROMIUM = "/usr/bin/chromium"  # Debian's; .ci/run installs it. Playwright's browsers never are.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 120
RUN_TIMEOUT_S = 360
UI_TIMEOUT_MS = 60_000

# configs/smoke.yaml, the job's default in-process executor spelled out (the launchpad submits
# what the editor holds), and an accuracy floor of 0 so that production_model promotes whatever
# two epochs on synthetic images achieve.
RUN_CONFIG = """\
execution: {config: {in_process: {}}}
resources:
  accelerator: {config: {accelerator: cpu}}
  quality: {config: {accuracy_floor: 0.0}}
ops:
  preprocessed_tensors: {config: {image_size: 32}}
  vit_checkpoint:
    config: {backbone: vit_tiny, weights: none, trainable_blocks: -1, max_epochs: 2,
             batch_size: 16, learning_rate: 0.001, seed: 0}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status runConfigYaml }
    ... on PythonError { message }
  }
}
"""
RUN_ERRORS_QUERY = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message stepKey }
        ... on ErrorEvent { error { message } }
      }
    }
  }
}
"""
LOCATIONS_QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class DagsterUI:
    url: str
    artifacts: Path
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"\n--- dagster dev log (last {chars} chars) ---\n{text[-chars:]}"

    def graphql(self, query: str, **variables: object) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
        assert not body.get("errors"), body["errors"]
        return body["data"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the whole group (webserver, daemon, code server, run workers), a grace period,
    then SIGKILL to whatever is left: `dagster dev` can take a while to wind its children down."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return  # the whole group is gone
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)


@pytest.fixture
def browser():
    """Debian's Chromium, headless, driven by playwright; a skip naming why it cannot start."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: `apt-get install chromium` (as .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        pytest.skip(f"playwright is not installed ({err}): pip install -e '.[dev]'")
    try:
        manager = sync_playwright().start()
    except Exception as err:
        pytest.skip(f"playwright's driver could not start: {err}")
    try:
        chromium = manager.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=UI_TIMEOUT_MS
        )
    except Exception as err:
        manager.stop()
        pytest.skip(f"{CHROMIUM} could not be launched by playwright: {err}")
    yield chromium
    chromium.close()
    manager.stop()


@pytest.fixture
def dagster_ui(sample_root: Path, tmp_path: Path) -> Iterator[DagsterUI]:
    """`dagster dev` (webserver and daemon: runs launched from the UI are queued and only the
    daemon dequeues them) on 127.0.0.1, a free port and an empty DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    artifacts = tmp_path / "artifacts"
    port = _free_port()
    ui = DagsterUI(f"http://127.0.0.1:{port}", artifacts, tmp_path / "dagster_dev.log")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BCC_DATA_DIR": str(sample_root),
        "BCC_ARTIFACTS_DIR": str(artifacts),
    }
    command = [DAGSTER, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with ui.log.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_ready(ui, process)
        yield ui
    finally:
        _stop(process)


def _wait_until_ready(ui: DagsterUI, process: subprocess.Popen) -> None:
    """The webserver answers and the code location has loaded (or failed to: then say why)."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}{ui.log_tail()}")
        try:
            with urllib.request.urlopen(f"{ui.url}/server_info", timeout=5):
                pass
            entries = ui.graphql(LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
            continue
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                pytest.fail(f"code location failed to load: {loaded['message']}{ui.log_tail()}")
            return
        time.sleep(1)
    pytest.fail(f"dagster dev not ready within {SERVER_START_S}s at {ui.url}{ui.log_tail()}")


def _wait_for_run(ui: DagsterUI, run_id: str) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = "unknown"
    while time.monotonic() < deadline:
        run = ui.graphql(RUN_QUERY, runId=run_id)["runOrError"]
        assert run["__typename"] == "Run", run
        status = run["status"]
        if status in TERMINAL:
            return status
        time.sleep(2)
    pytest.fail(f"run {run_id} still {status} after {RUN_TIMEOUT_S}s{ui.log_tail()}")


def _run_errors(ui: DagsterUI, run_id: str) -> str:
    events = ui.graphql(RUN_ERRORS_QUERY, runId=run_id)["logsForRun"].get("events", [])
    lines = [
        f"{e['__typename']} {e.get('stepKey') or ''}: {e.get('message')}\n"
        f"  {(e.get('error') or {}).get('message', '').strip()}"
        for e in events
        if e.get("error")
    ]
    return "\n".join(lines) or "(no error events)"


def _as_the_ui_shows(value: float) -> set[str]:
    """A float metadata entry is rendered as JavaScript's Number#toString: the shortest digits
    that round-trip, like Python's repr, except that integral values lose the '.0'."""
    forms = {repr(value)}
    if value.is_integer():
        forms.add(str(int(value)))
    return forms


@contextmanager
def _screenshot_on_failure(page, path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=str(path), full_page=True)
            print(f"\nbrowser at {page.url} when the test failed: {path}")
        except Exception:
            pass
        raise


def _launch_from_the_launchpad(page, ui: DagsterUI, config: str) -> str:
    """Open training_job's launchpad, replace its scaffolded config with `config`, launch, and
    return the new run's id once the run page shows."""
    from playwright.sync_api import expect

    page.goto(f"{ui.url}/locations/{LOCATION}/jobs/training_job/playground")
    editor = page.locator(".CodeMirror")
    expect(editor).to_be_visible()
    page.wait_for_function(
        "() => document.querySelector('.CodeMirror').CodeMirror.getValue().trim() !== ''"
    )
    editor.click()
    page.evaluate("text => document.querySelector('.CodeMirror').CodeMirror.setValue(text)", config)
    expect(page.get_by_text("No errors", exact=True)).to_be_visible()
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    launched = yaml.safe_load(ui.graphql(RUN_QUERY, runId=run_id)["runOrError"]["runConfigYaml"])
    assert launched == yaml.safe_load(config), "the launchpad did not take our config"
    return run_id


@pytest.mark.browser
def test_training_job_launched_from_the_ui_reports_accuracy_on_the_asset_page(
    browser, dagster_ui: DagsterUI, tmp_path: Path
):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)

    with _screenshot_on_failure(page, tmp_path / "failure.png"):
        run_id = _launch_from_the_launchpad(page, dagster_ui, RUN_CONFIG)
        status = _wait_for_run(dagster_ui, run_id)
        assert status == "SUCCESS", (
            f"run {run_id} ended {status}:\n{_run_errors(dagster_ui, run_id)}"
            f"{dagster_ui.log_tail()}"
        )
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()

        report_file = dagster_ui.artifacts / "test_metrics_report" / run_id / "report.json"
        accuracy = json.loads(report_file.read_text())["accuracy"]

        # The asset page lists the latest materialization's metadata, one row per entry.
        page.goto(f"{dagster_ui.url}/assets/test_metrics_report")
        rows = page.get_by_role("row")
        accuracy_row = rows.filter(has=page.get_by_role("cell", name="accuracy", exact=True))
        expect(accuracy_row).to_have_count(1)
        shown = accuracy_row.get_by_role("cell").last.inner_text().strip()
        assert shown in _as_the_ui_shows(round(accuracy, 4)), (shown, accuracy)
        path_row = rows.filter(has=page.get_by_role("cell", name="artifact_path", exact=True))
        expect(path_row).to_contain_text(run_id)

        # For the picture only: let the asset-history timeline draw its materialization tick.
        page.wait_for_load_state("networkidle")
        with suppress(PlaywrightTimeout):
            page.locator("[class*='RecentUpdatesTimeline_tickWrapper']").first.wait_for(
                timeout=10_000
            )
        screenshot = tmp_path / "ui_report.png"
        page.screenshot(path=str(screenshot))
    if os.environ.get("BCC_UPDATE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(screenshot, REPO / "docs" / "ui_report.png")

    # A config mistake launched from the same launchpad: the run fails at once, before any
    # asset, and its page says what to fix.
    with _screenshot_on_failure(page, tmp_path / "failure_bad_config.png"):
        bad = RUN_CONFIG.replace("backbone: vit_tiny", "backbone: vit_b16")
        bad_run = _launch_from_the_launchpad(page, dagster_ui, bad)
        assert _wait_for_run(dagster_ui, bad_run) == "FAILURE"
        errors = _run_errors(dagster_ui, bad_run)
        assert "ops.vit_checkpoint.config.backbone: unknown backbone 'vit_b16'" in errors, errors
        expect(page.get_by_text("unknown backbone 'vit_b16'").first).to_be_visible()
        assert not list(dagster_ui.artifacts.glob(f"*/{bad_run}")), "an asset ran"
