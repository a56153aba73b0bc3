"""The README and the docs cannot drift from the result files: the README's summary tables are
regenerated from them and compared, and every result file committed from now on carries its
full provenance."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "docs" / "experiments"
PREDATES = ROOT / "docs" / "results" / "PREDATES_PROVENANCE.txt"


def _load(name: str):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(EXPERIMENTS))


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220


def test_readme_summary_tables_are_read_from_the_result_files():
    """Every number in the README's four tables comes out of summarize_readme.py: a README
    edited by hand, or result files changed without regenerating, fail here."""
    mod = _load("summarize_readme")
    readme = (ROOT / "README.md").read_text()
    blocks = mod.blocks()
    assert set(blocks) == {"readme_classification", "readme_detection", "readme_speed",
                           "readme_reliability"}
    assert mod.replace_blocks(readme, blocks) == readme


def test_summarizer_reads_the_files_not_constants(tmp_path, monkeypatch):
    """Change a result file and the README's detection row changes with it."""
    import shutil

    mod = _load("summarize_readme")
    det = sys.modules["summarize_det"]
    results = tmp_path / "detection"
    shutil.copytree(det.RESULTS, results)
    f = results / "fruit_spp1" / "eval" / "results.json"
    doc = json.loads(f.read_text())
    doc["variants"]["fc7-svm+bbox"]["mAP"] = 0.5
    f.write_text(json.dumps(doc))
    monkeypatch.setattr(det, "RESULTS", results)
    row = next(r for r in mod.detection().splitlines() if r.startswith("| fruit, ImageNet"))
    assert row.startswith("| fruit, ImageNet MobileNetV2 | 50.0 | 71.3 | -21.3, points R-CNN's")


def test_the_other_generated_blocks_are_current():
    """docs/speed.md and the classification / detection pages match their summarizers."""
    bench = _load("summarize_bench")
    speed = (ROOT / "docs" / "speed.md").read_text()
    for marker, block in bench.blocks().items():
        assert f"<!-- {marker}:begin -->\n{block}<!-- {marker}:end -->" in speed, marker
    det = _load("summarize_det")
    page = (ROOT / "docs" / "detection.md").read_text()
    for marker, block in (("summarize_det", det.build()), ("summarize_sec45", det.sec45()),
                          ("summarize_e2e", det.e2e())):
        assert f"<!-- {marker}:begin -->\n{block}<!-- {marker}:end -->" in page, marker
    studies = _load("summarize_studies")
    for marker, block in studies.blocks().items():
        assert f"<!-- {marker}:begin -->\n{block}<!-- {marker}:end -->" in page, marker
    export = _load("summarize_export")
    export_page = (ROOT / "docs" / "export.md").read_text()
    assert export.replace_block(export_page, export.block()) == export_page
    cls = _load("summarize_classification")
    cls_page = (ROOT / "docs" / "classification.md").read_text()
    for study in cls.STUDIES.values():
        text = cls.summary(study, cls.load_runs(study))
        assert f"<!-- {study.marker}:begin -->\n{text}\n![validation curves]" in cls_page
    assert f"<!-- summarize_fullimage:begin -->\n{cls.full_image()}<!-- summarize_fullimage" \
        in cls_page
    verdicts = sys.modules["verdicts"]
    assert f"<!-- summarize_rule:begin -->\n{verdicts.RULE}\n<!-- summarize_rule:end -->" \
        in cls_page


# phrases about how the project was built rather than what it does
MAKING_OF = re.compile(r"\bsessions?\b|\bthis round\b|\bthe round\b|\bround's\b|\bthe issue\b|"
                       r"\bissue #?\d+|\(#\d+\)|\btickets?\b|\bwas lent\b|\bmachine kind\b",
                       re.IGNORECASE)
NOT_CHECKED: set[str] = set()  # every page is checked


@pytest.mark.parametrize("page", ["README.md"] + sorted(
    f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md") if p.name not in NOT_CHECKED))
def test_no_making_of_words(page):
    hits = [line for line in (ROOT / page).read_text().splitlines() if MAKING_OF.search(line)]
    assert not hits, hits


def test_making_of_pattern_catches_what_it_should():
    assert MAKING_OF.search("What it printed here after this round's fixes")
    assert MAKING_OF.search("an earlier session's checkpoint")
    assert MAKING_OF.search("Decisions the issue left open")
    assert not MAKING_OF.search("Pooling rounding: ceil rounding rounds bin edges")


def _result_files() -> list[Path]:
    files = [*(ROOT / "docs" / "results").glob("**/results.json"),
             *(ROOT / "docs" / "results").glob("**/timing.json"),
             *(ROOT / "docs" / "figures").glob("bench_*.json")]
    return sorted(files)


def _predates() -> set[str]:
    return {line.strip() for line in PREDATES.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def provenance_problems(doc: dict) -> list[str]:
    """What a result file's provenance lacks (empty: complete)."""
    p = doc.get("provenance")
    if not isinstance(p, dict):
        return ["no provenance"]
    need = {"written_at": str, "git": dict, "command": list, "seeds": dict, "versions": dict,
            "threads": dict, "stage_threads": dict, "cpu_gemm_gflops": (int, float),
            "inputs": dict}
    bad = [k for k, t in need.items() if not isinstance(p.get(k), t)]
    git = p.get("git", {})
    if isinstance(git, dict) and not ({"commit", "dirty"} <= set(git) or "note" in git):
        bad.append("git.commit/dirty")
    versions = p.get("versions", {})
    if isinstance(versions, dict):
        bad += [f"versions.{k}" for k in ("torch", "numba", "opencv-contrib-python-headless")
                if k not in versions]
    if isinstance(p.get("command"), list) and not p["command"]:
        bad.append("command (empty)")
    return bad


def test_every_new_result_file_records_its_provenance():
    predates = _predates()
    missing = [str(p) for p in sorted(predates) if not (ROOT / p).is_file()]
    assert not missing, f"listed in {PREDATES.name} but gone: {missing}"
    bad = {}
    for f in _result_files():
        rel = str(f.relative_to(ROOT))
        if rel in predates:
            continue
        problems = provenance_problems(json.loads(f.read_text()))
        if problems:
            bad[rel] = problems
    assert not bad, bad


def test_provenance_check_accepts_what_write_results_writes(tmp_path):
    """The check agrees with the writer: a file written now passes, an old one does not."""
    from sppnet.utils.provenance import write_results

    write_results(tmp_path / "results.json", {"mAP": 0.5}, {"seed": 0})
    assert provenance_problems(json.loads((tmp_path / "results.json").read_text())) == []
    old = json.loads((ROOT / "docs" / "results" / "demo" / "default_after_fixes" /
                      "results.json").read_text())
    assert "written_at" in provenance_problems(old) and "inputs" in provenance_problems(old)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", path.read_text(), re.M)}


@pytest.mark.parametrize("page", ["README.md"] + sorted(
    f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))
def test_relative_links_resolve(page):
    src = ROOT / page
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", src.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (src.parent / file).resolve() if file else src
        if not dest.exists():
            bad.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(target)
    assert not bad, bad


def test_slug_follows_github():
    assert _slug("Speed: the paper's Table 10 on a CPU (`sppnet bench detect`)") == \
        "speed-the-papers-table-10-on-a-cpu-sppnet-bench-detect"
