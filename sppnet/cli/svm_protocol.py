"""``sppnet svm-protocol``: full-image features + one-vs-rest linear SVMs, the Caltech-101
protocol (30 train / up to 50 test per class, N splits, mean per-class accuracy).

    sppnet svm-protocol --data ../shared/data/caltech101/101_ObjectCategories \
        --model mobilenet_v2 --weights .../mobilenet_v2_1.0_224_quant.tflite \
        --variant full --size 224 --levels 3,2,1 --use-levels 3,2,1 --output-dir runs/svm/full224
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils.config import MAX_LEVEL, int_arg, numbers_arg
from .args import add_output_args
from .features import add_feature_args, load_features


def _levels_or_gap(text: str) -> list[int | str]:
    """``--use-levels``: pyramid levels (integers in [1, MAX_LEVEL]) or ``gap``."""
    import argparse

    out: list[int | str] = []
    for v in (t for t in text.replace(" ", "").split(",") if t):
        if v == "gap":
            out.append(v)
            continue
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be levels (integers) or gap, got {v!r}") \
                from None
        if not 1 <= n <= MAX_LEVEL:
            raise argparse.ArgumentTypeError(f"levels must be in [1, {MAX_LEVEL}], got {n}")
        out.append(n)
    if not out:
        raise argparse.ArgumentTypeError(f"must name at least one level, got {text!r}")
    return out


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet svm-protocol")
    add_feature_args(p)
    p.add_argument("--use-levels", type=_levels_or_gap, default=None,
                   help="levels forming the representation (default: all of --levels); 'gap' "
                        "is global average pooling, '6' the paper's pool5 level")
    p.add_argument("--train-per-class", type=int_arg(1), default=30)
    p.add_argument("--test-per-class", type=int_arg(1), default=50)
    p.add_argument("--splits", type=int_arg(1), default=10)
    p.add_argument("--seed", type=int_arg(0), default=0)
    p.add_argument("--c-grid", type=numbers_arg(0, lo_open=True), default=(0.1, 1.0, 10.0),
                   help="C values cross-validated on training data")
    p.add_argument("--cv-folds", type=int_arg(2, 100), default=3,
                   help="folds of the C search on each split's training images")
    add_output_args(p, "replace a protocol run with other settings in OUTPUT_DIR")
    p.set_defaults(func=main)
    return p


def plot_confusion(confusion, classes, path: Path) -> None:
    from ..utils.plotting import pyplot

    plt = pyplot()
    import numpy as np

    m = np.asarray(confusion, dtype=float)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if len(classes) <= 30:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
        ax.set_yticks(range(len(classes)), classes, fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title("confusion (rows normalised, summed over splits)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    from ..utils.run_dir import check_cache_dir, check_output_dir, claim_folder, command_settings

    check_output_dir(args.output_dir)
    check_cache_dir(args.cache_dir, output_dir=args.output_dir)  # before the folder is claimed
    with claim_folder(args.output_dir, "svm-protocol", command_settings(args, ("cache_dir",)),
                      ("results.json", "confusion.png"), args.force):
        return _protocol(args)


def _protocol(args: argparse.Namespace) -> int:
    import numpy as np

    from ..classification.features import representation
    from ..classification.svm_protocol import run_protocol

    folder, spec, feats = load_features(args)
    use = list(args.use_levels or args.levels)
    x = representation(feats, use)
    labels = np.array([s.label for s in folder.samples])
    res = run_protocol(x, labels, args.train_per_class, args.test_per_class, args.splits,
                       args.seed, list(args.c_grid), usable=feats["ok"],
                       progress=not args.no_progress, cv_folds=args.cv_folds)
    plot_confusion(res["confusion"], folder.classes, args.output_dir / "confusion.png")
    settings = {**spec.__dict__, "levels": list(spec.levels), "use_levels": use,
                "dim": int(x.shape[1]), "classes": len(folder.classes),
                "empty_classes": folder.empty_classes,
                "undecodable": [str(s.path) for s, ok in zip(folder.samples, feats["ok"])
                                if not ok],
                "train_per_class": args.train_per_class, "test_per_class": args.test_per_class,
                "splits": args.splits, "seed": args.seed, "c_grid": list(args.c_grid),
                "cv_folds": args.cv_folds}
    out = {k: v for k, v in res.items() if k != "confusion"}
    from ..utils.provenance import write_results

    model_file = args.model if Path(args.model).is_file() else None  # a train-cls checkpoint
    write_results(args.output_dir / "results.json", {**out, "settings": settings},
                  {"seed": args.seed}, inputs=[args.weights, model_file])
    print(f"mean per-class accuracy {100 * res['mean_accuracy']:.2f} ± "
          f"{100 * res['std_accuracy']:.2f} % over {args.splits} splits "
          f"({x.shape[1]}-d) -> {args.output_dir}/results.json")
    return 0
