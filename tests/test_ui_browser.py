"""The UIs the README points to, opened in a real browser: Debian's `chromium` driven by Playwright
(no browser download). Each test asserts on what the page renders after its JavaScript ran, for
the services and run of the `demo_run` fixture (conftest)."""

import base64
import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from simsiam.services import mlflow_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "Debian's chromium is missing: scripts/test.sh installs it"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser):
    return browser.new_page()


@pytest.fixture
def fresh_page(browser):
    """A page in a new browser context: no localStorage, so no saved login or UI choices."""
    context = browser.new_context(viewport={"width": 1800, "height": 1000})
    yield context.new_page()
    context.close()


def _text(page, url: str, *expect: str) -> str:
    """The page's rendered text once all of `expect` show (the apps render after their API calls).
    The text is the one read when they showed: Prefect's artifact page re-renders when it adds
    `?tab=Artifact` to its URL, and a second read could catch it half-drawn (seen in CI)."""
    page.goto(url)
    # the rendered text, not one element's: a link and the words beside it are separate elements
    shown = "ts => { const b = document.body.innerText; return ts.every(t => b.includes(t)) && b; }"
    return page.wait_for_function(shown, arg=list(expect), timeout=60_000).json_value()


def _run_tab(run_url: str, tab: str) -> str:
    """A tab of the run page (`artifacts`, `model-metrics`): its name goes after the run id, before the
    `?workflowType=` query of the `run` URL."""
    path, sep, query = run_url.partition("?")
    return f"{path}/{tab}{sep}{query}"


def test_mlflow_run_page_shows_the_run_probe_and_figures(demo_run, page):
    body = _text(page, demo_run["run"], "probe/top1", "\nOverview\nModel metrics")
    run_name = body.split("\nOverview\nModel metrics", 1)[0].rsplit("\n", 1)[1]  # the title above the tabs
    assert run_name.startswith("cpu-demo-")
    assert f"probe/top1\n{demo_run['metrics']['probe/top1']}" in body.replace("\t", "\n")
    page.goto(_run_tab(demo_run["run"], "artifacts"))
    page.get_by_text("figures", exact=True).first.click()
    page.get_by_text("views.png").first.wait_for(timeout=30_000)
    shown = set(page.inner_text("body").split("\n"))
    assert {"loss.png", "z_std.png", "views.png", "embedding.png", "neighbors.png", "probe_confusion.png"} <= shown
    page.get_by_text("probe_confusion.png").first.click()  # the preview pane renders the picture
    preview = page.locator("img[src^='blob:']").first  # the artifact, fetched and decoded by the page
    preview.wait_for(timeout=30_000)
    assert preview.evaluate("img => img.complete && img.naturalWidth") > 300


def test_mlflow_run_link_opens_the_model_training_run_view_without_a_telemetry_notice(demo_run, fresh_page):
    # The `run` URL that `simsiam run` prints, in a browser with no saved UI choice: MLflow 3.17 shows a
    # run page in its GenAI view (sidebar "Evaluation runs", breadcrumb "Evaluations") unless the URL
    # says `workflowType=machine_learning`; the experiment's kind tag does not reach the run page.
    body = _text(fresh_page, demo_run["run"], "\nOverview\nModel metrics", "Parameters (", "probe/top1", "Settings")
    assert "Evaluation runs" not in body and "\nEvaluations\n" not in body  # not the GenAI view
    assert "\nRuns\nModels\n" in body and "Model registry" in body  # the model-training sidebar
    title = body.split("\nOverview\nModel metrics", 1)[0].split("\n")
    assert title[-2] == "Runs" and title[-1].startswith("cpu-demo-")  # breadcrumb <experiment> > Runs, run name
    assert f"probe/top1\n{demo_run['metrics']['probe/top1']}" in body.replace("\t", "\n")  # its metrics
    assert "Information about UI telemetry" not in body and "collects usage data" not in body
    # The server runs with telemetry off (MLflow's Home page keeps its notice until it is closed: the UI
    # hides it by a localStorage flag only, whatever the server says).
    pid = mlflow_status(demo_run["state"])["pid"]
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"MLFLOW_DISABLE_TELEMETRY=true" in env
    req = urllib.request.Request(demo_run["mlflow_ui"] + "/ajax-api/3.0/mlflow/ui-telemetry", method="POST",
                                 data=b'{"records": []}', headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:  # what the UI's telemetry worker posts to
        assert json.loads(r.read()) == {"status": "disabled"}
    fresh_page.get_by_text("Artifacts", exact=True).first.click()  # the tabs keep the model-training view
    fresh_page.wait_for_url("**/artifacts?workflowType=machine_learning", timeout=30_000)


def test_mlflow_model_page_shows_the_champion_alias_and_card(demo_run, page):
    url = f"{demo_run['mlflow_ui']}/#/models/{demo_run['registered_model']}"
    body = _text(page, url, "gate.reasons", "@\xa0champion", "**Gate: champion.**")
    assert "@\xa0champion" in body and "**Gate: champion.**" in body  # the alias tag, and the card's first line


def test_prefect_ui_logs_in_and_lists_the_pipeline_run(demo_run, page):
    page.goto(demo_run["ui_url"])
    page.wait_for_url("**/login**", timeout=60_000)  # the auth string is required
    page.locator("input").first.fill(demo_run["auth"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard**", timeout=60_000)
    body = _text(page, demo_run["ui_url"] + "/runs", "pipeline-cpu-demo-pretrain-", "Completed")
    assert "Can't connect" not in body and "Completed" in body
    # its steps are its task runs, each named for what it did
    tasks = _text(page, demo_run["ui_url"] + "/runs?tab=task-runs", "stage-train", "register")
    for task_run in ("\nstage-train\n", "\nstage-test\n", "\ntrain-cpu-demo\n", "\nevaluate\n", "\nregister\n"):
        assert task_run in tasks, task_run


def _report_artifact(demo_run) -> dict:
    """The report artifact of the demo run, from the Prefect API."""
    auth = "Basic " + base64.b64encode(demo_run["auth"].encode()).decode()
    token = urllib.request.Request(demo_run["api_url"] + "/csrf-token?client=ui-test", headers={"Authorization": auth})
    with urllib.request.urlopen(token, timeout=30) as r:
        csrf = json.loads(r.read())["token"]
    body = {"artifacts": {"key": {"any_": [demo_run["prefect_artifact"]]}}}
    req = urllib.request.Request(demo_run["api_url"] + "/artifacts/filter", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Authorization": auth, "Content-Type": "application/json",
                                          "Prefect-Csrf-Token": csrf, "Prefect-Csrf-Client": "ui-test"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())[0]


def test_prefect_artifact_page_shows_the_report(demo_run, page):
    artifact = _report_artifact(demo_run)
    # logged in by the previous test: the UI keeps the auth string in this page's localStorage
    body = _text(page, f"{demo_run['ui_url']}/artifacts/artifact/{artifact['id']}", "champion",
                 demo_run["registered_model"], "healthy")
    assert demo_run["registered_model"] in body and "healthy" in body


def test_prefect_report_link_renders_the_report_with_its_description_and_no_literal_backticks(demo_run, page):
    # the `prefect_report` URL that `simsiam run` prints; the report's markdown renders after its description
    version_link = f"{demo_run['registered_model']} v{demo_run['version']}"  # the registered version's link text
    description = "SimSiam pretrain report for cpu-demo: probe/top1"  # shown above the report
    body = _text(page, demo_run["prefect_report"], version_link, description)
    assert "/v2/artifacts/artifact/" in page.url
    assert "champion" in body
    assert "`" not in body  # inline code rendered as code, not as backticks


def test_prefect_artifacts_page_lists_the_report_description_and_the_mlflow_run_link(demo_run, page):
    body = _text(page, demo_run["ui_url"] + "/v2/artifacts", "simsiam-mlflow-run", "simsiam-pipeline-report",
                 "SimSiam pretrain report for cpu-demo")
    assert "simsiam-pipeline-report" in body and "SimSiam pretrain report for cpu-demo" in body


def test_prefect_pipeline_flow_run_logs_say_what_stage_train_evaluate_and_register_did(demo_run, page):
    flow_run = _report_artifact(demo_run)["flow_run_id"]  # the report is written by the pipeline flow run
    body = _text(page, f"{demo_run['ui_url']}/v2/runs/flow-run/{flow_run}?tab=Logs", "where to look:",
                 "uploaded 2 objects", "probe/top1", "-> champion")
    lines = body.split("\n")
    for start in ("stage train: fashion-mnist-train@", "stage test: fashion-mnist-test@",
                  "train (pretrain): MLflow run ", "evaluate: knn/final_top1 ",
                  f"register: {demo_run['registered_model']} v", "where to look: MLflow run "):
        assert any(line.startswith(start) for line in lines), start
    assert "uploaded 2 objects" in body and "probe/top1" in body and "-> champion" in body


def test_prefect_report_link_before_login_shows_the_login_page_without_error_toasts(demo_run, fresh_page):
    fresh_page.goto(demo_run["prefect_report"])  # not logged in: the UI asks for the auth string first
    fresh_page.wait_for_url("**/login**", timeout=60_000)
    fresh_page.wait_for_timeout(3000)  # the V1 UI's toasts came within a second, from its API calls' 401s
    body = fresh_page.inner_text("body")
    assert "Login" in body and "Authentication failed" not in body and "Something went wrong" not in body
    assert fresh_page.locator("[data-sonner-toast]").count() == 0


def test_mlflow_runs_table_link_opens_model_training_runs_with_probe_knn_and_collapse_columns(demo_run, fresh_page):
    body = _text(fresh_page, demo_run["runs_table"], "probe/top1")  # the `runs_table` URL that `simsiam run` prints
    assert "Token Usage" not in body and "Training runs" not in body  # not the GenAI overview
    headers = set(fresh_page.locator("[role=columnheader]").all_inner_texts())
    assert {"probe/top1", "knn/final_top1", "train/z_std_ratio"} <= {h.strip() for h in headers}, headers
    assert fresh_page.get_by_text("cpu-demo-", exact=False).first.is_visible()  # the demo run's row
