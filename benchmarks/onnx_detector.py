"""Seconds per photo of a trained detector in ONNX Runtime (``sppnet export`` + the runner in
``docs/onnx_runner.py``) against PyTorch (``SPPDetector.detect``), on the same windows, in one
run; the detections are checked equal (the same kept set, matched one to one: boxes to 1e-3 px,
scores to 1e-4) and the largest differences printed.

    python benchmarks/onnx_detector.py --model runs/det/fruit/model \
        --images ../shared/data/fruit/test [--onnx fruit.onnx] [--limit 20] [--repeats 3] \
        [--output docs/results/export/fruit/results.json]

Windows: Selective Search with the detector's settings, computed once per photo before timing
(the same windows go to both; their time is not in either number). Timed per photo: the
network (conv maps, window pooling, fc head, scores, box regression) and NMS — PyTorch's
``detect`` against the runner's preprocessing, graph and NumPy NMS. Medians over photos of the
per-photo median of ``--repeats`` runs after one warm-up. Without ``--onnx`` the detector is
exported to a temporary file first. Threads: both use their defaults unless ``--threads`` is
given (then torch.set_num_threads and ONNX Runtime's intra-op threads are set to it).
``--output``: the per-photo rows and the summary as JSON, with provenance (versions, commit,
threads, the detector's and the photos' digests); a file already there is not replaced.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RUNNER = Path(__file__).resolve().parents[1] / "docs" / "onnx_runner.py"


def load_runner():
    spec = importlib.util.spec_from_file_location("onnx_runner", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def per_call(fn, args: tuple, repeats: int) -> tuple[float, object]:
    out = fn(*args)  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def same_detections(got: dict, want, atol_score: float = 1e-4,
                    atol_box: float = 1e-3) -> tuple[bool, float, float]:
    """The same kept set: as many detections, each of ``got`` matched one to one with one of
    ``want`` of its label, score within ``atol_score`` and box within ``atol_box`` px (the
    order of scores tied to ~1e-11 may differ between two float32 implementations). Returns
    ``(equal, largest score difference, largest box difference)`` over the matched pairs."""
    gl, gs, gb = got["labels"], got["scores"], got["boxes"]
    wl, ws, wb = want.labels.numpy(), want.scores.numpy(), want.boxes.numpy()
    if len(gl) != len(wl):
        return False, float("inf"), float("inf")
    free = np.ones(len(wl), bool)
    ds = db = 0.0
    for i in range(len(gl)):
        cand = np.flatnonzero(free & (wl == gl[i]) & (np.abs(ws - gs[i]) <= atol_score)
                              & (np.abs(wb - gb[i]).max(1) <= atol_box))
        if not len(cand):
            return False, float("inf"), float("inf")
        j = cand[np.argmin(np.abs(ws[cand] - gs[i]))]
        free[j] = False
        ds, db = max(ds, float(abs(ws[j] - gs[i]))), max(db, float(np.abs(wb[j] - gb[i]).max()))
    return True, ds, db


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="detector folder")
    ap.add_argument("--images", type=Path, required=True, help="a folder of photos")
    ap.add_argument("--onnx", type=Path, help="the exported graph (default: export it now)")
    ap.add_argument("--limit", type=int, default=20, help="photos to time")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--output", type=Path, help="write the results here as JSON")
    ap.add_argument("--conditions", default="quiet machine",
                    help="how the machine was while timing (recorded; e.g. 'other jobs running')")
    args = ap.parse_args()
    if args.output is not None and args.output.exists():
        ap.error(f"{args.output} exists; give another --output (results are never replaced)")

    import onnxruntime as ort

    from sppnet.data.decode import decode_image, list_images
    from sppnet.detection.detector import SPPDetector
    from sppnet.detection.export import export_detector
    from sppnet.detection.proposals import propose

    if args.threads:
        torch.set_num_threads(args.threads)
    mod = load_runner()
    det = SPPDetector.load(args.model).to("cpu")
    tmp = None
    onnx_path = args.onnx
    if onnx_path is None:
        tmp = tempfile.TemporaryDirectory()
        onnx_path, _ = export_detector(det, Path(tmp.name) / "detector.onnx")
    runner = mod.Runner(onnx_path)
    if args.threads:
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        runner.session = ort.InferenceSession(str(onnx_path), so,
                                              providers=["CPUExecutionProvider"])
    st = det.settings
    pcfg = st.proposal  # the proposals the detector was trained with
    paths = list_images(args.images)[:args.limit]
    rows, worst = [], {"scores": 0.0, "boxes": 0.0}
    for p in paths:
        image = decode_image(p)
        windows = propose(image, pcfg)
        t_torch, want = per_call(det.detect, (image, windows), args.repeats)
        t_onnx, got = per_call(runner.detect, (image, windows), args.repeats)
        same, ds, db = same_detections(got, want)
        if same and len(want.scores):
            worst = {"scores": max(worst["scores"], ds), "boxes": max(worst["boxes"], db)}
        rows.append((p.name, image.shape[:2], len(windows), t_torch, t_onnx, same))
        print(f"{p.name}: {image.shape[1]}x{image.shape[0]}, {len(windows)} windows, "
              f"torch {t_torch * 1e3:.1f} ms, onnxruntime {t_onnx * 1e3:.1f} ms, "
              f"{'equal' if same else 'DIFFERENT'}")
    if not rows:
        print(f"no photos in {args.images}")
        return 1
    med_t = statistics.median(r[3] for r in rows)
    med_o = statistics.median(r[4] for r in rows)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
          f"{ort.__version__}, float32, CPU; scale {st.scales[0]}, {len(rows)} photos")
    print(f"median seconds per photo (network + NMS, same windows): torch {med_t:.3f}, "
          f"onnxruntime {med_o:.3f} (onnxruntime / torch = {med_o / med_t:.2f})")
    print(f"largest differences over all kept detections: scores {worst['scores']:.2e}, "
          f"boxes {worst['boxes']:.2e} px; {sum(not r[5] for r in rows)} photo(s) different")
    if args.output is not None:
        from sppnet.utils.provenance import write_results

        summary = {
            "photos": len(rows), "scale": int(st.scales[0]), "score": st.score,
            "conditions": args.conditions,
            "backbone": det.spec.model, "images": str(args.images), "model": str(args.model),
            "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
            "onnxruntime": ort.__version__,
            "median_seconds": {"torch": med_t, "onnxruntime": med_o},
            "onnxruntime_over_torch": med_o / med_t,
            "largest_difference": worst, "photos_different": sum(not r[5] for r in rows),
            "rows": [{"photo": r[0], "size": list(r[1]), "windows": r[2], "torch_s": r[3],
                      "onnxruntime_s": r[4], "equal": r[5]} for r in rows]}
        write_results(args.output, summary, {},
                      inputs=[args.model / "detector.json", args.model / "detector.safetensors",
                              *paths])
        print(f"wrote {args.output}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if all(r[5] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
