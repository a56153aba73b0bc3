"""The speed block of docs/export.md, from the runs of benchmarks/onnx_detector.py committed
under docs/results/export/<run>/results.json (ONNX Runtime against PyTorch on the same photos
and windows, in one run, with the equality check).

    python docs/experiments/summarize_export.py           # print
    python docs/experiments/summarize_export.py --write   # replace the block in docs/export.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "export"
DOC = ROOT / "docs" / "export.md"
MARKER = "summarize_export"


def runs() -> list[tuple[str, dict]]:
    return [(d.name, json.loads((d / "results.json").read_text()))
            for d in sorted(RESULTS.glob("*")) if (d / "results.json").is_file()]


def block() -> str:
    found = runs()
    if not found:
        return "No run of `benchmarks/onnx_detector.py` is committed yet.\n"
    lines = ["| run | detector | photos (timed runs each) | PyTorch s/photo | ONNX Runtime "
             "s/photo | ORT / PyTorch | largest difference: scores, boxes | photos not equal | "
             "measured |", "|---|---|---|---|---|---|---|---|---|"]
    loaded = [name for name, r in found if r.get("conditions", "quiet machine") != "quiet "
              "machine"]
    for name, r in found:
        p = r["provenance"]
        med, worst = r["median_seconds"], r["largest_difference"]
        lines.append(
            f"| {name} | {r['backbone']}, scale {r['scale']}, {r['score']} | {r['photos']} "
            f"({r['repeats']}) | "
            f"{med['torch']:.3f} | {med['onnxruntime']:.3f} | {r['onnxruntime_over_torch']:.2f} "
            f"| {worst['scores']:.1e}, {worst['boxes']:.1e} px | {r['photos_different']} | "
            f"{p['written_at'][:10]}, torch {p['versions']['torch']} ({r['torch_threads']} "
            f"threads), onnxruntime {r['onnxruntime']}, {p['cpu_gemm_gflops']} GFLOP/s, "
            f"{r.get('conditions', 'quiet machine')} |")
    lines += ["", "Medians over the photos of each photo's median over its timed runs, after a "
              "warm-up: the network (conv maps, window "
              "pooling, fc head, scores, box regression) and NMS on the same Selective Search "
              "windows; \"equal\" means the same kept detections, boxes within 1e-3 px and "
              "scores within 1e-4. Files: `docs/results/export/<run>/results.json` (every "
              "photo's row, the detector's and photos' digests)."]
    if loaded:
        lines += ["", f"Timed with other jobs on the machine ({', '.join(loaded)}): those "
                  "seconds and ratios show the equality run, not a speed figure."]
    return "\n".join(lines) + "\n"


def replace_block(text: str, body: str) -> str:
    begin, end = f"<!-- {MARKER}:begin -->", f"<!-- {MARKER}:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}{end}{tail}"


def main() -> None:
    body = block()
    print(body)
    if "--write" in sys.argv[1:]:
        DOC.write_text(replace_block(DOC.read_text(), body))
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
