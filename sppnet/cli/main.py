"""``sppnet`` entry point: dispatch to one module per subcommand."""

from __future__ import annotations

import os

# Large CPU tensors (a 100 MB window-pooling output) page-fault ~3x less with transparent huge
# pages; torch reads this when it first allocates, so it is set before torch is imported.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from .. import __version__  # noqa: E402

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("sppnet.cli.demo", "the paper's headline results in ~10 minutes on a CPU, with an "
                                "HTML report (no data or weights needed)"),
    "bench": ("sppnet.cli.bench", "speed benchmarks against references, measured in one run"),
    "train-cls": ("sppnet.cli.train_cls", "train an SPP-net classifier on a folder of photos"),
    "features": ("sppnet.cli.features", "extract and cache full-image SPP features"),
    "svm-protocol": ("sppnet.cli.svm_protocol", "features + linear SVMs, the Caltech-101 "
                                                "protocol"),
    "eval-cls": ("sppnet.cli.eval_cls", "test-time views (centre, 10-crop, full, on feature "
                                        "maps, multi-view) of a trained classifier"),
    "train-det": ("sppnet.cli.train_det", "train an SPP-net detector on a VOC-format folder"),
    "detect": ("sppnet.cli.detect", "run a trained detector on images"),
    "eval-det": ("sppnet.cli.eval_det", "evaluate a trained detector on a labelled folder "
                                        "(SPP or R-CNN mode, any scales)"),
    "eval-voc": ("sppnet.cli.eval_voc", "VOC mAP of detections against VOC XML"),
    "eval-coco": ("sppnet.cli.eval_coco", "COCO metrics (pycocotools) and VOC07 mAP of "
                                          "detections against a COCO JSON"),
    "convert": ("sppnet.cli.convert", "VOC folders to COCO JSON and back"),
    "export": ("sppnet.cli.export", "a trained detector as one ONNX graph (ONNX Runtime, no "
                                    "PyTorch), with its runner settings"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors (a malformed or out-of-range flag) as one line, ``sppnet <command>:
    error: argument --flag: ...``, exit code 2 — the same shape as every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message.strip().splitlines()[0]}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sppnet", description="SPP-net in PyTorch")
    parser.add_argument("--version", action="version", version=f"sppnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        mod.get_args_parser(sub.add_parser(name, help=help_text, description=help_text))
    return parser


# how every command logs (to stderr): time, level, where, message
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """The one logging set-up of the ``sppnet`` commands (a no-op where the root logger already
    has handlers, e.g. under pytest or in a program that configured logging itself)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


# What a user's mistake raises (a bad value, a missing file, a folder that holds another run):
# one line naming it and exit code 2, as argparse does for malformed flags. SPPNET_DEBUG=1 shows
# the traceback instead.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               FileExistsError, PermissionError)


def _os_error_line(e: OSError) -> str:
    """``<reason>: <path>`` of an OSError about a user's path (``cannot write x: Read-only file
    system``)."""
    what = e.strerror or type(e).__name__
    paths = [str(p) for p in (e.filename, getattr(e, "filename2", None)) if p is not None]
    return f"{what}: {' -> '.join(paths)}" if paths else what


def main(argv: Sequence[str] | None = None) -> int:
    from ..utils.run_dir import is_user_os_error

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help / --version exit 0, a malformed flag exits 2
        return int(e.code or 0)
    setup_logging()
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if os.environ.get("SPPNET_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"sppnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full disk, a name too long: about the user's paths
        if os.environ.get("SPPNET_DEBUG") or not is_user_os_error(e):
            raise
        print(f"sppnet {args.command}: error: {_os_error_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
