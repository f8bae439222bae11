"""The UIs the README points to, opened in a real browser: Debian's `chromium` driven by Playwright
(no browser download). Each test asserts on what the page renders after its JavaScript ran."""

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest
from test_flows import TINY

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """`simsiam up --with-prefect-server`, then one tiny `simsiam run`: a champion, its run and the
    flow runs with their report artifact, as a user has them after the demo."""
    state = tmp_path_factory.mktemp("ui") / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SIMSIAM_S3"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    cli = [sys.executable, "-m", "simsiam.cli"]
    try:
        up = subprocess.run([*cli, "up", "--with-prefect-server", "--state", str(state)], capture_output=True,
                            text=True, env=env, timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        args = [*cli, "run", "--subset", "512", "--state", str(state)]
        for s in TINY:
            args += ["--set", s]
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout[r.stdout.index("{\n"):])
        yield {**out["where_to_look"], **json.loads(up.stdout)["prefect"],
               "auth": (state / "prefect-auth").read_text().strip(), "metrics": out["metrics"]}
    finally:
        subprocess.run([*cli, "down", "--state", str(state)], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def page():
    assert CHROMIUM, "Debian's chromium is missing: scripts/test.sh installs it"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser.new_page()
        browser.close()


def _text(page, url: str, expect: str) -> str:
    """The page's rendered text once `expect` shows (the apps render after their API calls)."""
    page.goto(url)
    page.get_by_text(expect, exact=False).first.wait_for(timeout=60_000)
    return page.inner_text("body")


def test_mlflow_run_page_shows_the_run_probe_and_figures(pipeline, page):
    body = _text(page, pipeline["run"], "probe/top1")
    run_name = body.split("Runs\n", 1)[1].split("\n", 1)[0]
    assert run_name.startswith("cpu-demo-")
    assert f"probe/top1\n{pipeline['metrics']['probe/top1']}" in body.replace("\t", "\n")
    page.goto(pipeline["run"] + "/artifacts")
    page.get_by_text("figures", exact=True).first.click()
    page.get_by_text("views.png").first.wait_for(timeout=30_000)
    shown = set(page.inner_text("body").split("\n"))
    assert {"loss.png", "z_std.png", "views.png", "embedding.png", "neighbors.png", "probe_confusion.png"} <= shown
    page.get_by_text("probe_confusion.png").first.click()  # the preview pane renders the picture
    page.locator("img[src*='probe_confusion.png']").first.wait_for(timeout=30_000)


def test_mlflow_model_page_shows_the_champion_alias_and_card(pipeline, page):
    body = _text(page, f"{pipeline['mlflow_ui']}/#/models/{pipeline['registered_model']}", "gate.reasons")
    assert "@\xa0champion" in body and "**Gate: champion.**" in body  # the alias tag, and the card's first line


def test_prefect_ui_logs_in_and_lists_the_pipeline_run(pipeline, page):
    page.goto(pipeline["ui_url"])
    page.wait_for_url("**/login**", timeout=60_000)  # the auth string is required
    page.locator("input").first.fill(pipeline["auth"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard**", timeout=60_000)
    body = _text(page, pipeline["ui_url"] + "/runs", "pipeline-cpu-demo-pretrain-")
    assert "Can't connect" not in body and "Completed" in body
    for flow_run in ("stage-cpu-demo-", "\npretrain-cpu-demo-", "evaluate-cpu-demo-"):  # and its subflows
        assert flow_run in body


def test_prefect_artifact_page_shows_the_report(pipeline, page):
    auth = "Basic " + base64.b64encode(pipeline["auth"].encode()).decode()
    token = urllib.request.Request(pipeline["api_url"] + "/csrf-token?client=ui-test", headers={"Authorization": auth})
    with urllib.request.urlopen(token, timeout=30) as r:
        csrf = json.loads(r.read())["token"]
    body = {"artifacts": {"key": {"any_": [pipeline["prefect_artifact"]]}}}
    req = urllib.request.Request(pipeline["api_url"] + "/artifacts/filter", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Authorization": auth, "Content-Type": "application/json",
                                          "Prefect-Csrf-Token": csrf, "Prefect-Csrf-Client": "ui-test"})
    with urllib.request.urlopen(req, timeout=30) as r:
        artifact = json.loads(r.read())[0]
    # logged in by the previous test: the UI keeps the auth string in this page's localStorage
    body = _text(page, f"{pipeline['ui_url']}/artifacts/artifact/{artifact['id']}", "champion")
    assert pipeline["registered_model"] in body and "healthy" in body
