"""The layers import only downwards: ops -> nn -> models -> data -> pipelines -> cli, and no
pipeline imports a sibling pipeline (docs/architecture.md); the commands other than ``bench``
import nothing from ``bench``, only ``train-det`` reaches into the detection training module,
and inference (the detector, the run loop, ``load_detector``, the export) imports no training
module."""

import ast
import subprocess
import sys
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
    "cli": {"bench", "classification", "data", "demo", "detection", "evaluation", "models",
            "ops", "utils"},
}
# the detection modules that train; inference must not load them
TRAINING = {"train", "finetune", "e2e", "svm", "bbox_fit", "targets"}
# what inference is: the detector, its files, the run loop, the export
INFERENCE = ("detector", "detector_files", "run", "export")


def _imports(path: Path) -> set[str]:
    """The sppnet modules ``path`` imports (anywhere in it, lazily too), as dotted names
    relative to the package (``detection.train``, ``bench``)."""
    here = path.relative_to(ROOT).with_suffix("").parts
    package = here[:-1] if here[-1] != "__init__" else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - (node.level - 1)])
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("sppnet."):
                mod = node.module.split(".")[1:]
            else:
                continue
            subs = [".".join([*mod, a.name]) for a in node.names
                    if (ROOT.joinpath(*mod, a.name + ".py")).is_file()
                    or (ROOT.joinpath(*mod, a.name)).is_dir()]
            out.update(subs)
            # the package itself, when a name comes from its __init__ (``from . import sub``
            # imports only the submodule; ``from .. import __version__``: no module at all)
            if mod and len(subs) < len(node.names):
                out.add(".".join(mod))
    return out


def _imported_rooms(path: Path) -> set[str]:
    return {m.split(".")[0] for m in _imports(path)}


def test_rooms_import_only_downwards():
    bad = []
    for room, allowed in ALLOWED.items():
        for f in sorted((ROOT / room).rglob("*.py")):
            extra = _imported_rooms(f) - allowed - {room}
            if extra:
                bad.append(f"{f.relative_to(ROOT)} imports {sorted(extra)}")
    assert not bad, bad


def test_the_check_sees_an_upward_import(tmp_path):
    f = ROOT / "detection" / "_probe_for_test.py"
    try:
        f.write_text("from ..classification.train import load_model\n")
        assert _imported_rooms(f) == {"classification"}
    finally:
        f.unlink()


def test_commands_other_than_bench_import_nothing_from_bench():
    bad = [f.name for f in sorted((ROOT / "cli").glob("*.py")) if f.name != "bench.py"
           and any(m == "bench" or m.startswith("bench.") for m in _imports(f))]
    assert not bad, bad


def test_only_train_det_reaches_into_the_detection_training_module():
    bad = [str(f.relative_to(ROOT)) for room in ("cli", "demo", "bench")
           for f in sorted((ROOT / room).rglob("*.py"))
           if "detection.train" in _imports(f) and f.stem != "train_det"]
    assert not bad, bad


def _closure(start: str) -> set[str]:
    """The detection modules ``detection.<start>`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m in seen or not (ROOT / "detection" / f"{m}.py").is_file():
            continue
        seen.add(m)
        todo += [i.split(".")[1] for i in _imports(ROOT / "detection" / f"{m}.py")
                 if i.startswith("detection.") and i.count(".") == 1]
    return seen


def test_inference_imports_no_training_module():
    """By reading the code (every import, lazy ones too) and by importing it."""
    for start in INFERENCE:
        assert not _closure(start) & TRAINING, (start, sorted(_closure(start) & TRAINING))
    code = ("import sys; from sppnet.detection import load_detector, SPPDetector; "
            "import sppnet.detection.run, sppnet.detection.export; "
            "print(' '.join(m for m in sys.modules if m.startswith('sppnet.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "sppnet.detection.detector" in loaded and "sppnet.detection.run" in loaded
    assert not {f"sppnet.detection.{m}" for m in TRAINING} & set(loaded), loaded


def test_the_inference_check_sees_a_training_import():
    f = ROOT / "detection" / "_probe_for_test.py"
    try:
        f.write_text("def f():\n    from .finetune import finetune\n")
        assert "finetune" in _closure("_probe_for_test")
    finally:
        f.unlink()


def test_the_detection_config_imports_no_torch():
    code = ("import sys; import sppnet.detection.config; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def _module_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (lazily too; a package is its __init__)."""
    def name(p: Path) -> str:
        parts = p.relative_to(root).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    files = {name(p): p for p in root.rglob("*.py")}
    return {m: {d for d in _imports(p) if d in files and d != m} for m, p in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: every strongly connected set of two or more modules (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while not scc or scc[-1] != v:
                scc.append(stack.pop())
                on.discard(scc[-1])
            if len(scc) > 1:
                out.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules():
    assert _cycles(_module_graph(ROOT)) == []


def test_the_cycle_check_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def _long_functions(root: Path, limit: int = 60) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_is_over_60_lines():
    assert _long_functions(ROOT) == []


def test_the_length_check_sees_a_long_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}")
    assert _long_functions(tmp_path) == ["m.py:5 long (61 lines)"]
