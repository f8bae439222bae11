"""The README is a short quick start and docs/ holds the rest (issue #29), checked on the text and
against the code it describes: no services, no training."""

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from simsiam.config import Config, list_presets, load_config
from simsiam.models import build_backbone

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 200
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # markdown links and images
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)


def _prose(text: str) -> str:
    """The page without its fenced code blocks (a `# comment` in a bash block is no heading)."""
    return FENCE.sub("", text)


def _code_blocks(text: str) -> list[str]:
    return [block.split("\n", 1)[1].rsplit("```", 1)[0].strip() for block in FENCE.findall(text)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(path.read_text()).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            slug = _slug(m.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _cpu_demo_feature_dim() -> int:
    return build_backbone(load_config("cpu-demo").model).out_dim


def test_readme_has_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= MAX_README_LINES


def test_readme_shows_the_demo_command_and_the_test_command_that_ci_runs():
    blocks = _code_blocks(README.read_text())
    assert "bash scripts/demo.sh" in blocks and "bash scripts/test.sh" in blocks
    ci_commands = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
                   if ln.strip().startswith("bash ")]
    assert ci_commands == ["bash scripts/test.sh"]
    assert "simsiam run" in (ROOT / "scripts" / "demo.sh").read_text()


def test_every_docs_page_starts_with_a_title_and_a_one_line_summary():
    assert DOCS
    for page in DOCS:
        lines = page.read_text().splitlines()
        assert lines[0].startswith("# ") and lines[1] == "", page.name
        assert lines[2] and not lines[2].startswith("#") and lines[3] == "", page.name


def test_readme_links_to_every_docs_page():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    assert not {p.resolve() for p in DOCS} - linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken


def test_configuration_doc_names_every_key_of_every_config_section():
    text = (ROOT / "docs" / "configuration.md").read_text()
    keys = []
    for name, field in Config.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            keys += [f"{name}.{key}" for key in section.model_fields]
        else:
            keys.append(name)
    assert {"storage.endpoint_url", "tracking.experiment"} <= set(keys)
    assert [key for key in keys if f"| `{key}` |" not in text] == []
    assert "| `faults." not in text  # fault injection is not config: environment variables (simsiam.faults)


def test_feature_dims_in_the_presets_table_match_the_backbone_built_from_each_preset():
    text = (ROOT / "docs" / "configuration.md").read_text()
    stated = {m[1]: int(m[2]) for m in re.finditer(r"^\| `([\w-]+)` \| N x (\d+) \|", text, re.M)}
    assert set(stated) == set(list_presets())
    built = {preset: build_backbone(load_config(preset).model).out_dim for preset in stated}
    assert stated == built


def test_cpu_demo_backbone_returns_1024_features():
    import torch

    cfg = load_config("cpu-demo")
    net = build_backbone(cfg.model).eval()
    with torch.no_grad():
        out = net(torch.rand(2, cfg.model.in_channels, cfg.data.image_size, cfg.data.image_size))
    assert tuple(out.shape) == (2, _cpu_demo_feature_dim()) == (2, 1024)


def test_every_cpu_demo_feature_dim_in_readme_and_docs_is_the_built_backbones():
    dim = _cpu_demo_feature_dim()
    claim = re.compile(r"N x (\d+) for `?cpu-demo|(\d+) floats for `?cpu-demo")
    stated = {page.name: [int(a or b) for a, b in claim.findall(page.read_text())] for page in PAGES}
    assert stated["README.md"] and stated["tracking-and-registry.md"]
    assert {page: dims for page, dims in stated.items() if set(dims) - {dim}} == {}


def test_every_pyfunc_load_or_serve_command_sets_the_tracking_uri():
    commands = [line for page in PAGES for block in _code_blocks(page.read_text()) for line in block.splitlines()
                if not line.lstrip().startswith("#") and ("mlflow.pyfunc.load_model" in line
                                                         or "mlflow models serve" in line)]
    assert commands
    assert [line for line in commands if "MLFLOW_TRACKING_URI=" not in line] == []
