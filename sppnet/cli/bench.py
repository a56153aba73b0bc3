"""``sppnet bench ops``: measure the pooling ops against their references in one run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser("sppnet bench")
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    ops = sub.add_parser("ops", help="spp_pool / spp_roi_pool against the obvious loops")
    ops.add_argument("--windows", type=int, default=2000, help="number of windows (default 2000)")
    ops.add_argument("--channels", type=int, default=256, help="map channels (default 256)")
    ops.add_argument("--map-size", type=int, nargs=2, default=(43, 57), metavar=("H", "W"),
                     help="conv map size (default 43 57: ZF-5 conv5 of 688x917)")
    ops.add_argument("--image-size", type=int, nargs=2, default=(688, 917), metavar=("H", "W"),
                     help="image the windows are drawn in (default 688 917)")
    ops.add_argument("--batch", type=int, default=64, help="whole-image case batch (default 64)")
    ops.add_argument("--repeats", type=int, default=5, help="timed runs per fast op (median)")
    ops.add_argument("--loop-repeats", type=int, default=3, help="timed runs per loop reference")
    ops.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    ops.set_defaults(func=main_ops)
    tr = sub.add_parser("train", help="training throughput (fwd+bwd+step) of the paper's nets")
    tr.add_argument("--repeats", type=int, default=5, help="timed steps per case (median)")
    tr.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    tr.set_defaults(func=main_train)
    return parser


def _write_json(result: dict, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


def main_train(args: argparse.Namespace) -> int:
    from ..bench.train import format_train_report, run_train_benchmark

    result = run_train_benchmark(repeats=args.repeats)
    print(format_train_report(result))
    _write_json(result, args.json)
    return 0


def main_ops(args: argparse.Namespace) -> int:
    from ..bench.ops import format_report, run_ops_benchmark

    h, w = args.map_size
    result = run_ops_benchmark(windows=args.windows, channels=args.channels, map_size=(h, w),
                               image_size=tuple(args.image_size), batch=args.batch,
                               repeats=args.repeats, loop_repeats=args.loop_repeats)
    print(format_report(result))
    _write_json(result, args.json)
    ok = result["window_forward"]["equal"] and result["image_forward_backward"]["equal_forward"]
    return 0 if ok else 1
