"""The user docs: README.md and docs/*.md link to files that exist, the results page and the README's summary are
what scripts/results_tables.py generates, the README stays a short guide, and no page reads like a diary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.fixture
def results_tables(load_script):
    return load_script("results_tables.py")


def local_links(page: Path) -> list[str]:
    """The relative link targets of a markdown page (no web addresses, no in-page anchors)."""
    targets = [match.group(1).split("#")[0] for match in LINK.finditer(page.read_text())]
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_of_the_user_docs_resolves(page):
    missing = [target for target in local_links(page) if not (page.parent / target).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_state_findings_not_a_diary(page):
    text = page.read_text()
    for pattern in (r"\bissue\s*#?\d+", r"\bhonestly\b", r"\bleft open\b", r"\bneither is shipped\b"):
        assert not re.search(pattern, text, re.IGNORECASE), f"{page.relative_to(ROOT)}: {pattern}"


def test_the_link_check_sees_a_missing_file(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[here](here.md), [web](https://example.org/x.md), [anchor](#top), [gone](gone/x.png#a)")
    (tmp_path / "here.md").write_text("")
    assert [t for t in local_links(page) if not (tmp_path / t).exists()] == ["gone/x.png"]


def test_readme_is_a_short_guide_that_links_the_reference_pages():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in ("docs/parameters.md", "docs/results.md", "docs/images/demo.png"):
        assert f"({page})" in readme
    assert "scripts/setup.sh --demo" in readme and "scripts/setup.sh --test" in readme


def test_results_page_and_readme_summary_are_the_generated_ones(results_tables):
    module = results_tables
    for path, text in module.generated_files().items():
        assert path.read_text() == text, f"{path.name} is stale: python scripts/results_tables.py --write"


def test_results_page_is_generated_from_the_json(tmp_path, results_tables):
    """A figure in results.json appears in the page; a results folder the template leaves out is an error."""
    module = results_tables
    summary = json.loads((ROOT / "docs" / "results" / "semloc-sim-v1" / "results.json").read_text())
    summary["results"][0]["recall_at_n_all_queries"]["1"] = 12.345
    (tmp_path / "std").mkdir()
    (tmp_path / "std" / "results.json").write_text(json.dumps(summary))
    page = module.render_page("intro\n\n<!-- table: std -->\n\n<!-- segmentation: std -->\n", tmp_path)
    first = summary["results"][0]
    assert f"| {first['method']} | {first['condition']} | 12.3 |" in page
    assert "| shipped (all conditions) |" in page and "<!--" in page.splitlines()[0]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"results not in .*: other"):
        module.render_page("<!-- table: std -->\n", tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        module.render_page("<!-- table: std -->\n<!-- table: other -->\n<!-- table: absent -->\n", tmp_path)


def test_experiment_directive_renders_the_rows_of_its_json(tmp_path, results_tables):
    module = results_tables
    summary = {"threshold_m": 25.0, "database": "db", "columns": ["single", "sequence 5"],
               "rows": [{"drive": "fog", "method": "semantic", "single": 15.71, "sequence 5": 19.64}]}
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "results.json").write_text(json.dumps(summary))
    page = module.render_page("<!-- experiment: exp -->\n", tmp_path)
    assert "| drive | method | single | sequence 5 |" in page and "| fog | semantic | 15.7 | 19.6 |" in page


def test_fix_integrity_directive_counts_the_published_fixes(tmp_path, results_tables):
    def per_query(status, error, mahalanobis):
        return {"status": status, "error_m": error, "mahalanobis_sq": mahalanobis}

    single = per_query(["fix", "fix", "low_confidence", "fix"], [3.0, 300.0, 500.0, None], [1.0, 80.0, 90.0, None])
    filtered = per_query(["fix", "low_confidence", "low_confidence", "no_match"], [2.0, 20.0, 30.0, None],
                         [10.0, 1.0, 1.0, None])
    summary = {"threshold_m": 25.0, "results": [{"method": "semantic", "condition": "fog", "per_query": single,
                                                 "filtered": {"per_query": filtered}}]}
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "results.json").write_text(json.dumps(summary))
    page = results_tables.render_page("<!-- fix-integrity: ev -->\n", tmp_path)
    assert "| semantic | fog | single | 75.0 | 1 | 300 | 50.0 |" in page  # the unknown error is not counted
    assert "| semantic | fog | filtered | 25.0 | 0 | 2 | 100.0 |" in page
