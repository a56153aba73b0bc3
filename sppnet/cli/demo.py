"""``sppnet demo``: train a small SPP-net and detector from nothing, time SPP against the R-CNN
way, and write ``results.json``, PNGs and ``report.html`` (see :mod:`sppnet.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils.config import MAX_WORKERS, config_from_args, int_arg, number_arg
from ..utils.device import DEVICE_HELP

# flag -> DemoConfig field
FLAGS = {"output_dir": "output_dir", "data": "data", "minutes": "minutes", "seed": "seed",
         "workers": "workers", "timing_images": "timing_images", "no_progress": "progress",
         "device": "device"}


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet demo")
    p.add_argument("--output-dir", type=Path, default=Path("runs/demo"),
                   help="where results.json, the PNGs and report.html go (default runs/demo); "
                        "a rerun reuses finished stages")
    p.add_argument("--data", type=Path,
                   help="a VOC-format folder (e.g. ../shared/data/fruit) instead of the "
                        "generated set")
    p.add_argument("--minutes", type=number_arg(0, 600, lo_open=True), default=10.0,
                   help="time budget on a 2-core CPU; scales images, epochs and iterations "
                        "(default 10)")
    p.add_argument("--seed", type=int_arg(0), default=0)
    p.add_argument("--workers", type=int_arg(0, MAX_WORKERS), default=2,
                   help="Selective Search processes")
    p.add_argument("--timing-images", type=int_arg(1, 1000), default=2,
                   help="test images timed in SPP and R-CNN mode (default 2)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, run_demo

    cfg = config_from_args(DemoConfig(), args, FLAGS,
                           {"no_progress": lambda off: {"progress": not off}})
    r = run_demo(cfg)
    t = r["timing"]
    print(f"\nSPP-net demo ({r['data']['source']}, {len(r['data']['classes'])} classes, "
          f"{r['wall_seconds']['total'] / 60:.1f} min)")
    print(f"  detection mAP (VOC07, {r['data']['test_images']} test images): "
          f"{100 * r['mAP']:.1f}   [{r['variant']}]")
    for c, ap in r["per_class_ap"].items():
        print(f"    AP {c:<16} {100 * ap:5.1f}")
    s = t["seconds_per_image"]
    print(f"  seconds per image, {t['windows_per_image']:.0f} windows: SPP {s['spp']['total']:.2f}"
          f"  R-CNN way {s['rcnn']['total']:.2f}  ->  speedup {t['speedup_total']:.1f}x "
          f"(conv alone {t['speedup_conv']:.0f}x)")
    print(f"  report: {args.output_dir / 'report.html'}")
    return 0
