"""The demo numbers the README quotes are those of the committed result file of a run with the
locked versions (a number typed by hand into a README is a bug)."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "docs" / "results" / "demo" / "locked_versions" / "results.json"


def test_the_readme_demo_block_is_the_locked_run():
    r = json.loads(RESULT.read_text())
    assert r["provenance"]["lock"]["matches"] is True
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("SPP-net demo (synthetic"):]
    block = block[:block.index("```")]
    assert f"detection mAP (VOC07, 80 test images): {100 * r['mAP']:.1f}" in block
    for name, ap in r["per_class_ap"].items():
        assert re.search(rf"AP {name}\s+{100 * ap:.1f}\n", block), name
    assert f"speedup {r['speedup']:.1f}x" in block
    demo_md = (ROOT / "docs" / "demo.md").read_text()
    assert f"**{100 * r['mAP']:.1f}**" in demo_md and f"**{r['speedup']:.1f}×**" in demo_md


def test_a_fresh_install_at_a_later_commit_printed_the_same_demo_numbers():
    """README command 1 run again on a fresh clone at a later commit (lock installed): the same
    detection mAP and per-class APs to the last bit, the same classifier."""
    rerun = json.loads((RESULT.parent.parent / "locked_rerun_dc96588" / "results.json")
                       .read_text())
    first = json.loads(RESULT.read_text())
    assert rerun["provenance"]["lock"]["matches"] is True
    assert rerun["provenance"]["git"]["commit"] != first["provenance"].get("git", {}).get(
        "commit")
    assert rerun["mAP"] == first["mAP"] and rerun["per_class_ap"] == first["per_class_ap"]
    assert rerun["classifier"]["val"] == first["classifier"]["val"]
    readme = (ROOT / "README.md").read_text()
    assert "docs/results/demo/locked_rerun_dc96588/" in readme
