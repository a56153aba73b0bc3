"""The layers import only downwards: ops -> nn -> models -> data -> pipelines -> cli, and no
pipeline imports a sibling pipeline (docs/architecture.md)."""

import ast
from pathlib import Path

import sppnet

ROOT = Path(sppnet.__file__).parent
# what each room may import from (besides itself); utils and evaluation are leaf helpers
ALLOWED = {
    "ops": set(),
    "utils": set(),
    "evaluation": {"utils"},
    "nn": {"ops"},
    "models": {"nn", "ops", "utils"},
    "data": {"ops", "utils"},
    "classification": {"data", "evaluation", "models", "nn", "ops", "utils"},
    "detection": {"data", "evaluation", "models", "nn", "ops", "utils"},
    "bench": {"data", "detection", "models", "nn", "ops", "utils"},
    "demo": {"classification", "data", "detection", "evaluation", "models", "ops", "utils"},
}


def _imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module:
            rooms.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.startswith("sppnet."):
            rooms.add(node.module.split(".")[1])
    return rooms


def test_rooms_import_only_downwards():
    bad = []
    for room, allowed in ALLOWED.items():
        for f in sorted((ROOT / room).rglob("*.py")):
            extra = _imported_rooms(f) - allowed - {room}
            if extra:
                bad.append(f"{f.relative_to(ROOT)} imports {sorted(extra)}")
    assert not bad, bad


def test_the_check_sees_an_upward_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from ..classification.train import load_model\n")
    assert _imported_rooms(f) == {"classification"}
