"""``sppnet export``: a trained detector as one ONNX graph, and what a runner needs beside it.

    sppnet export --model runs/det/fruit/model --output fruit.onnx

Writes ``FILE.onnx`` (image at the detector's scale + windows + original size -> per-class
scores and regressed, clipped boxes; dynamic image size and window count) and ``FILE.json``
(classes, scale, normalisation, proposal and NMS settings). ``docs/onnx_runner.py`` runs the
pair with ONNX Runtime, NumPy, Pillow and OpenCV only; ``docs/export.md`` explains the graph.
After writing, the graph is run once in ONNX Runtime on a generated image and compared with
PyTorch (``--no-check`` skips it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHECK_SIZE = (157, 211)  # (H, W) of the generated image the written graph is checked on
CHECK_WINDOWS = 64


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet export")
    p.add_argument("--model", type=Path, required=True,
                   help="detector folder (train-det's OUTPUT_DIR/model)")
    p.add_argument("--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--scale", type=int,
                   help="export at this one scale (shorter side) instead of the detector's "
                        "own scales")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the written graph in ONNX Runtime against PyTorch")
    p.set_defaults(func=main)
    return p


def _check_args(args: argparse.Namespace) -> None:
    if not args.model.exists():
        raise FileNotFoundError(f"--model {args.model} does not exist")
    if not args.model.is_dir():
        raise NotADirectoryError(f"--model {args.model} is not a folder (give train-det's "
                                 f"OUTPUT_DIR/model)")
    if args.output.suffix != ".onnx":
        raise ValueError(f"--output must name a .onnx file, got {args.output}")
    if args.output.is_dir():
        raise IsADirectoryError(f"--output {args.output} is a folder; give a .onnx file name")
    from ..utils.run_dir import check_output_file

    for f in (args.output, args.output.with_suffix(".json")):
        # never a run's file, even with --force; an earlier export (its graph, its .json) is
        # the command's own and --force replaces it
        own = [args.output.name, args.output.with_suffix(".json").name]
        check_output_file(f, "--output", own if _an_export(args.output) else [])
        if f.exists() and not args.force:
            raise FileExistsError(f"{f} exists; not overwriting it (--force to replace)")
    if args.scale is not None and args.scale < 1:
        raise ValueError(f"--scale must be a positive number of pixels, got {args.scale}")


def _an_export(onnx: Path) -> bool:
    """Whether ``onnx`` and its ``.json`` are an earlier ``sppnet export``'s (or not there)."""
    import json

    from ..detection.export import RUNNER_FORMAT

    meta = onnx.with_suffix(".json")
    if not meta.exists():
        return True
    try:
        return json.loads(meta.read_text()).get("format") == RUNNER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _missing_onnx() -> str | None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    return ", ".join(missing) if missing else None


def _check_graph(det, path: Path) -> dict:
    """Run the written graph on a generated image in ONNX Runtime; the largest differences
    from PyTorch (:class:`DetectorGraph` eager)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from ..data.transforms import resize_to, to_tensor
    from ..detection.export import DetectorGraph, input_names
    from ..detection.features import scaled_sizes

    rng = np.random.default_rng(0)
    h, w = CHECK_SIZE
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    xy = rng.uniform(0, 0.8, (CHECK_WINDOWS, 2)) * [w, h]
    wh = rng.uniform(0.05, 1.0, (CHECK_WINDOWS, 2)) * [w, h]
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
    xs = [to_tensor(resize_to(image, s), det.spec.mean, det.spec.input_scale)[None]
          for s in scaled_sizes((h, w), det.settings.scales)]
    size = np.array([h, w], np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = dict(zip(input_names(len(xs)), [x.numpy() for x in xs] + [boxes, size]))
    scores, cand = session.run(None, feed)
    graph = DetectorGraph(det.cpu()).eval()
    with torch.no_grad():
        ref_scores, ref_boxes = graph(xs, torch.from_numpy(boxes), torch.from_numpy(size))
    return {"scores": float(np.abs(scores - ref_scores.numpy()).max()),
            "boxes": float(np.abs(cand - ref_boxes.numpy()).max())}


def main(args: argparse.Namespace) -> int:
    _check_args(args)
    missing = _missing_onnx()
    if missing:
        print(f"sppnet export: error: ONNX export needs {missing}: pip install 'sppnet[onnx]'",
              file=sys.stderr)
        return 2
    from ..detection.detector import SPPDetector
    from ..detection.export import check_exportable, export_detector

    det = SPPDetector.load(args.model).cpu()
    if args.scale is not None:
        det.configure(scales=(args.scale,))
    check_exportable(det)
    onnx_path, meta = export_detector(det, args.output)
    mb = onnx_path.stat().st_size / 2**20
    scales = ", ".join(str(s) for s in det.settings.scales)
    print(f"wrote {onnx_path} ({mb:.1f} MB) and {meta}: {len(det.classes)} classes, "
          f"scale{'s' if len(det.settings.scales) > 1 else ''} {scales}, "
          f"{det.settings.score} scores"
          + (", box regression" if det.settings.bbox_reg and det.regressor is not None else ""))
    if not args.no_check:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            print("not checked: onnxruntime is not installed (pip install onnxruntime)")
            return 0
        diff = _check_graph(det, onnx_path)
        print(f"checked in ONNX Runtime on a generated {CHECK_SIZE[0]}x{CHECK_SIZE[1]} image with "
              f"{CHECK_WINDOWS} windows: max |difference| from PyTorch {diff['scores']:.2e} "
              f"(scores), {diff['boxes']:.2e} px (boxes)")
    return 0
