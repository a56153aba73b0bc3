"""``sppnet bench``: ops, train, detect and proposals, each against its baseline in one run."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..utils.config import (
    MAX_BATCH,
    MAX_DETECTION_SIDE,
    MAX_FC_DIM,
    MAX_WIDTH_MULT,
    MAX_WINDOWS,
    int_arg,
    ints_arg,
    number_arg,
)

REPEATS = int_arg(1, 1000)


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser("sppnet bench")
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for add in (_add_ops, _add_train, _add_detect, _add_train_det, _add_e2e, _add_proposals):
        add(sub)
    return parser


def _outputs(p: argparse.ArgumentParser, func, progress: bool = False) -> None:
    """``--json`` (the figures, with their provenance), ``--no-progress`` where the benchmark
    shows progress, and the function that runs it."""
    p.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    if progress:
        p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=func)


def _add_ops(sub) -> None:
    ops = sub.add_parser("ops", help="spp_pool / spp_roi_pool against the obvious loops")
    ops.add_argument("--windows", type=int_arg(1, MAX_WINDOWS), default=2000,
                     help="number of windows (default 2000)")
    ops.add_argument("--channels", type=int_arg(1, 4096), default=256,
                     help="map channels (default 256)")
    ops.add_argument("--map-size", type=int_arg(1, 512), nargs=2, default=(43, 57),
                     metavar=("H", "W"),
                     help="conv map size (default 43 57: ZF-5 conv5 of 688x917)")
    ops.add_argument("--image-size", type=int_arg(1, MAX_DETECTION_SIDE), nargs=2,
                     default=(688, 917), metavar=("H", "W"),
                     help="image the windows are drawn in (default 688 917)")
    ops.add_argument("--batch", type=int_arg(1, MAX_BATCH), default=64,
                     help="whole-image case batch (default 64)")
    ops.add_argument("--repeats", type=REPEATS, default=5,
                     help="timed runs per fast op (median)")
    ops.add_argument("--loop-repeats", type=REPEATS, default=3,
                     help="timed runs per loop reference")
    ops.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    _outputs(ops, main_ops)


def _add_train(sub) -> None:
    tr = sub.add_parser("train", help="training throughput (fwd+bwd+step) of the paper's nets")
    tr.add_argument("--repeats", type=REPEATS, default=5, help="timed steps per case (median)")
    tr.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    tr.add_argument("--weights", help="also the ImageNet MobileNetV2 fine-tuning regimes (the "
                                      "TFLite file)")
    _outputs(tr, main_train)


def _add_detect(sub) -> None:
    det = sub.add_parser("detect", help="the paper's Table 10: SPP-net vs the R-CNN way on the "
                                        "same windows")
    det.add_argument("--images", type=Path, default=None,
                     help="image folder (default ../shared/data/voc100/JPEGImages if present)")
    det.add_argument("--n-images", type=int_arg(1, 1000), default=4,
                     help="timed images (plus 1 warm-up)")
    det.add_argument("--model", default="zf5_spp", help="SPP model, random weights (zf5_spp)")
    det.add_argument("--width-mult", type=number_arg(0, MAX_WIDTH_MULT, lo_open=True),
                     default=1.0)
    det.add_argument("--fc-dim", type=int_arg(1, MAX_FC_DIM), default=4096,
                     help="fc6/fc7 width (paper: 4096)")
    det.add_argument("--proposals", type=int_arg(1, MAX_WINDOWS), default=2000,
                     help="windows per image")
    det.add_argument("--rcnn-windows", type=int_arg(1, MAX_WINDOWS), default=32,
                     help="windows the R-CNN conv time is measured on (then extrapolated)")
    det.add_argument("--svd-ranks", type=ints_arg(1, MAX_FC_DIM), default=(1024, 512),
                     help="fc6,fc7 ranks for the SVD timing")
    det.add_argument("--memory-images", type=int_arg(0, 100), default=3,
                     help="1200-px images for the peak-memory probe (0: skip)")
    _outputs(det, main_detect, progress=True)


def _add_train_det(sub) -> None:
    td = sub.add_parser("train-det", help="training cost, stage by stage: the SPP way against "
                                          "the R-CNN way on the same images and windows")
    td.add_argument("--data", required=True, help="VOC-format training folder (or COCO .json)")
    td.add_argument("--split", help="ImageSets/Main/<split>.txt (or a list file) of --data")
    td.add_argument("--backbone", help="backbone (default mobilenet_v2)")
    td.add_argument("--weights", help="the backbone's weights (the MobileNetV2 TFLite file)")
    td.add_argument("--proposals", help="precomputed windows instead of Selective Search")
    td.add_argument("--max-images", type=int, default=16, help="training images (default 16)")
    td.add_argument("--max-proposals", type=int, default=500,
                    help="windows per image (default 500)")
    td.add_argument("--ft-iters", type=int, default=300,
                    help="fine-tuning iterations (default 300)")
    td.add_argument("--scales", help="as train-det's --scales (default: train-det's default)")
    td.add_argument("--project", default="240,2000,3000", metavar="IMAGES,WINDOWS,ITERS",
                    help="also compute (from the measured rates) the cost of this many "
                         "images, windows per image and iterations (default: the fruit "
                         "training set at the defaults, 240,2000,3000)")
    td.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any other DetConfig field, for both ways")
    td.add_argument("--work-dir", type=Path, help="keep the runs here (default: a temporary "
                                                  "folder, removed)")
    _outputs(td, main_train_det, progress=True)


def _add_e2e(sub) -> None:
    e2 = sub.add_parser("e2e", help="one end-to-end fine-tuning iteration and the window "
                                    "pyramid's share of it")
    e2.add_argument("--backbone", default="mobilenet_v2", help="backbone (default mobilenet_v2)")
    e2.add_argument("--weights", help="the backbone's weights (mobilenet_v2: the TFLite file)")
    e2.add_argument("--image-size", type=int_arg(32, MAX_DETECTION_SIDE), nargs=2,
                    default=(385, 513), metavar=("H", "W"),
                    help="input size (default 385 513: fruit's chosen scale on a 3:4 photo)")
    e2.add_argument("--convs", type=int_arg(0, 1000), default=10,
                    help="trunk convolutions trained")
    e2.add_argument("--windows", type=int_arg(1, MAX_WINDOWS), default=64,
                    help="windows per image (default 64)")
    e2.add_argument("--repeats", type=REPEATS, default=5, help="timed runs per case (median)")
    _outputs(e2, main_e2e)


def _add_proposals(sub) -> None:
    pr = sub.add_parser("proposals", help="proposal recall vs windows and seconds per image, "
                                          "Selective Search and EdgeBoxes")
    pr.add_argument("--data", action="append", default=[], metavar="NAME=FOLDER[:SPLIT_FILE]",
                    help="a VOC-format folder (repeatable); default: ../shared/data voc100, "
                         "fruit/test and the raccoon test split when present")
    pr.add_argument("--max-images", type=int_arg(1), default=40,
                    help="first N images of each set")
    pr.add_argument("--counts", type=ints_arg(1, MAX_WINDOWS), default=(100, 300, 1000, 2000),
                    help="windows per image")
    pr.add_argument("--png", type=Path, default=None, help="recall-vs-windows plot")
    _outputs(pr, main_proposals, progress=True)


def _proposal_sets(specs: list[str]) -> dict:
    from ..data.voc import load_voc

    if not specs:
        shared = Path.cwd() / ".." / "shared" / "data"
        specs = [s for s, ok in (
            (f"voc100={shared / 'voc100'}", (shared / "voc100").is_dir()),
            (f"fruit_test={shared / 'fruit' / 'test'}", (shared / "fruit" / "test").is_dir()),
            (f"raccoon_test={shared / 'raccoon'}:docs/experiments/raccoon_test.txt",
             (shared / "raccoon").is_dir() and Path("docs/experiments/raccoon_test.txt")
             .is_file())) if ok]
        if not specs:
            raise FileNotFoundError("no --data given and ../shared/data is not here; pass "
                                    "--data NAME=FOLDER")
    sets = {}
    for spec in specs:
        if "=" not in spec:
            raise ValueError(f"--data must be NAME=FOLDER[:SPLIT_FILE], got {spec!r}")
        name, rest = spec.split("=", 1)
        folder, _, split = rest.partition(":")
        sets[name] = load_voc(folder, split or None)
    return sets


def main_proposals(args: argparse.Namespace) -> int:
    from ..bench.proposals import format_proposal_report, plot_recall, run_proposal_benchmark

    _check_json(args)

    counts = list(args.counts)
    result = run_proposal_benchmark(_proposal_sets(args.data), counts=counts,
                                    max_images=args.max_images, progress=not args.no_progress)
    print(format_proposal_report(result))
    _write_json(result, args.json)
    if args.png is not None:
        plot_recall(result, args.png)
        print(f"wrote {args.png}")
    return 0


def _default_images() -> Path:
    here = Path.cwd() / ".." / "shared" / "data" / "voc100" / "JPEGImages"
    if here.is_dir():
        return here
    raise FileNotFoundError("no --images given and ../shared/data/voc100/JPEGImages is not "
                            "here; pass --images FOLDER (any folder of photos)")


def main_detect(args: argparse.Namespace) -> int:
    from ..bench.detect import format_detect_report, run_detect_benchmark
    from ..data.decode import list_images

    _check_json(args)

    folder = args.images or _default_images()
    images = list_images(folder)
    if len(args.svd_ranks) != 2:
        raise ValueError(f"--svd-ranks must be two ranks R6,R7, got {args.svd_ranks}")
    r6, r7 = args.svd_ranks
    result = run_detect_benchmark(images, args.model, args.width_mult, args.n_images,
                                  args.fc_dim, args.proposals, args.rcnn_windows, (r6, r7),
                                  memory_images=args.memory_images,
                                  progress=not args.no_progress)
    print(format_detect_report(result))
    _write_json(result, args.json)
    ok = all(result[k]["pooled_equal"] and result[k]["dedupe_equal"]
             for k in ("1scale", "5scale"))
    return 0 if ok else 1


def _write_json(result: dict, path: Path | None, inputs: list | None = None) -> None:
    """The figures with their provenance (commit, command line, versions, threads, the digests
    of the input files), written atomically."""
    if path is not None:
        from ..utils.provenance import write_results

        write_results(path, result, {}, inputs=inputs)
        print(f"wrote {path}")


def main_e2e(args: argparse.Namespace) -> int:
    from ..bench.e2e import format_e2e_report, run_e2e_benchmark
    from ..models.backbone import backbone_spec

    _check_json(args)
    spec = backbone_spec(args.backbone, args.weights)
    result = run_e2e_benchmark(spec, tuple(args.image_size), args.convs, windows=args.windows,
                               repeats=args.repeats)
    print(format_e2e_report(result))
    _write_json(result, args.json, [args.weights])
    return 0


def main_train_det(args: argparse.Namespace) -> int:
    from ..bench.train_det import format_train_det_report, run_train_det_benchmark
    from ..cli.train_det import parse_scales
    from ..detection.config import DetConfig
    from ..utils.config import apply_overrides, config_from_args, parse_set

    _check_json(args)
    try:
        images, windows, iters = (int(v) for v in args.project.split(","))
    except ValueError:
        raise ValueError(f"--project must be IMAGES,WINDOWS,ITERS, got {args.project!r}") \
            from None
    flags = {k: k for k in ("data", "split", "backbone", "weights", "proposals", "max_images",
                            "max_proposals", "ft_iters", "scales")}
    given = argparse.Namespace(**{**vars(args), "set": []})
    cfg = config_from_args(DetConfig(), given, flags, {"scales": parse_scales})
    # the lr drops at the default's proportion (2000 of 3000), then --set overrides anything
    cfg = dataclasses.replace(cfg, ft_lr_step=max(1, cfg.ft_iters * 2 // 3))
    cfg = apply_overrides(cfg, parse_set(args.set))
    cfg.validate()
    result = run_train_det_benchmark(cfg, args.work_dir, (images, windows, iters),
                                     progress=not args.no_progress)
    print(format_train_det_report(result))
    _write_json(result, args.json, [args.weights, args.proposals])
    return 0


def _check_json(args: argparse.Namespace) -> None:
    """``--json`` (and ``--png``) checked before the benchmark runs (minutes of work to lose
    otherwise)."""
    from ..utils.run_dir import check_output_file

    if args.json is not None:
        check_output_file(args.json, "--json")
    if getattr(args, "png", None) is not None:  # bench proposals' plot: never a run's file
        check_output_file(args.png, "--png")


def main_train(args: argparse.Namespace) -> int:
    from ..bench.train import (
        DEFAULT_CASES,
        format_train_report,
        mobilenet_cases,
        run_train_benchmark,
    )

    _check_json(args)

    cases = DEFAULT_CASES
    if args.weights:
        if not Path(args.weights).is_file():
            raise FileNotFoundError(f"--weights {args.weights} does not exist")
        cases = cases + mobilenet_cases(args.weights)
    from ..utils.device import resolve_device

    result = run_train_benchmark(cases, repeats=args.repeats,
                                 device=resolve_device(args.device))
    print(format_train_report(result))
    _write_json(result, args.json, [args.weights])
    return 0


def main_ops(args: argparse.Namespace) -> int:
    from ..bench.ops import format_report, run_ops_benchmark

    _check_json(args)

    h, w = args.map_size
    from ..utils.device import resolve_device

    result = run_ops_benchmark(windows=args.windows, channels=args.channels, map_size=(h, w),
                               image_size=tuple(args.image_size), batch=args.batch,
                               repeats=args.repeats, loop_repeats=args.loop_repeats,
                               device=resolve_device(args.device))
    print(format_report(result))
    _write_json(result, args.json)
    tv = result["torchvision"]
    ok = (result["window_forward"]["equal"] and result["image_forward_backward"]["equal_forward"]
          and (not tv["available"] or tv["nms_same_kept_set"]))
    return 0 if ok else 1
