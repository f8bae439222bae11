"""Screenshots of the UIs after a run, for the README (docs/screenshots/): the MLflow run's
figures, the model version's card and the Prefect report artifact, in Debian's headless chromium.

    .venv/bin/simsiam up --with-prefect-server --state S
    .venv/bin/simsiam run --state S > run.json
    .venv/bin/python scripts/screenshots.py --state S --run-json run.json
"""

from __future__ import annotations

import argparse
import base64
import json
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright


def _report_artifact_id(api: str, auth: str, key: str) -> str:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode(), "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(f"{api}/csrf-token?client=shots", headers=headers)) as r:
        headers.update({"Prefect-Csrf-Token": json.loads(r.read())["token"], "Prefect-Csrf-Client": "shots"})
    body = json.dumps({"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{api}/artifacts/filter", body, headers)) as r:
        return json.loads(r.read())[0]["id"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", type=Path, required=True, help="state dir of `simsiam up --with-prefect-server`")
    ap.add_argument("--run-json", type=Path, required=True, help="the JSON that `simsiam run` printed")
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = ap.parse_args()
    text = args.run_json.read_text()
    w = json.loads(text[text.index("{\n"):])["where_to_look"]
    auth = (args.state / "prefect-auth").read_text().strip()
    prefect = json.loads((args.state / "prefect" / "service.json").read_text()) if (
        args.state / "prefect" / "service.json").exists() else {}
    ui = w["prefect_ui"] if w["prefect_ui"].startswith("http") else prefect["ui_url"]
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        run_page, _, query = w["run"].partition("?")
        page.goto(f"{run_page}/artifacts?{query}")
        page.get_by_text("figures", exact=True).first.click()
        page.get_by_text("embedding.png").first.click()
        page.locator("img[src^='blob:']").first.wait_for()
        page.wait_for_timeout(1500)
        page.screenshot(path=args.out / "mlflow-run-figures.png")
        page.goto(f"{w['mlflow_ui']}/#/models/{w['registered_model']}/versions/{w['version']}")
        page.get_by_text("Gate:").first.wait_for()
        page.wait_for_timeout(1500)
        page.screenshot(path=args.out / "mlflow-model-card.png", full_page=True)
        page.goto(ui)
        page.wait_for_url("**/login**")
        page.locator("input").first.fill(auth)
        page.keyboard.press("Enter")
        page.wait_for_url("**/dashboard**")
        api = ui.rstrip("/") + "/api"
        page.goto(f"{ui}/artifacts/artifact/{_report_artifact_id(api, auth, w['prefect_artifact'])}")
        page.get_by_text("champion").first.wait_for()
        page.wait_for_timeout(1500)
        page.screenshot(path=args.out / "prefect-report-artifact.png")
        browser.close()
    print(json.dumps(sorted(str(f) for f in args.out.glob("*.png"))))


if __name__ == "__main__":
    main()
