"""The docs site builds with every warning fatal, and its links are checked offline.

``mkdocs build --strict`` fails on a broken internal link, a missing anchor, a page left out of the
navigation, and a docstring mkdocstrings cannot read (mkdocs.yml sets ``validation:`` to warn on each,
and ``--strict`` turns every warning into a failure). External links are never fetched: they are
listed by ``scripts/docs_links.py``, and this test checks only that each is a well-formed https URL.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.extras import skip_unless_extra

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    skip_unless_extra("docs")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings or [done.stderr[-4000:]])
    return out


def test_the_site_builds_with_strict_warnings(site):
    for page in ("index.html", "getting-started/index.html", "internals/architecture/index.html",
                 "reference/cli/index.html", "plugins/hooks/index.html", "leaderboard/schema/index.html"):
        assert (site / page).is_file(), page


def test_the_cli_reference_lists_every_command(site):
    import typer

    from harness.cli import build_app

    html = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "<!-- cli-reference -->" not in html and "Usage: harness run" in html
    root = typer.main.get_command(build_app())
    context = root.context_class(root, info_name="harness")
    for name in root.list_commands(context):
        assert f"harness {name}</code>" in html, f"harness {name} is missing from the CLI reference"


def test_the_api_pages_render_the_docstrings(site):
    hooks = (site / "plugins" / "hooks" / "index.html").read_text(encoding="utf-8")
    assert 'id="harness.hookspecs.register_selectors"' in hooks
    contract = (site / "plugins" / "contract" / "index.html").read_text(encoding="utf-8")
    assert 'id="harness.interfaces.Selector"' in contract
    testing = (site / "plugins" / "testing" / "index.html").read_text(encoding="utf-8")
    assert 'id="harness.testing.SelectorContract"' in testing
    plans = (site / "experiments" / "plans" / "index.html").read_text(encoding="utf-8")
    assert "<!-- plan-schema -->" not in plans and "confirmation_seeds" in plans


def _links():
    spec = importlib.util.spec_from_file_location("docs_links", ROOT / "scripts" / "docs_links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_external_links_are_listed_and_well_formed():
    links = _links().collect()
    assert links, "no external link found: the collector is broken"
    for url, where in links.items():
        assert re.match(r"https://[\w.-]+\.[a-z]{2,}(/|$)", url), f"{url} ({', '.join(where)}) is not an https URL"
        assert not re.search(r"//(localhost|127\.0\.0\.1)", url), f"{url} ({', '.join(where)}) points at this machine"


def test_the_link_collector_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See [the site](https://example.org/a) and <https://example.org/b>.\n"
                    "`curl https://example.org/in-a-code-span`\n"
                    "```bash\npip install --index-url https://example.org/in-a-block x\n```\n", encoding="utf-8")
    assert [url for _, url in _links().external_links(page)] == ["https://example.org/a", "https://example.org/b"]
