"""Pooling ops against the obvious loops, in one run: the same as ``sppnet bench ops``.

    python benchmarks/bench_ops.py --json runs/bench_ops.json
"""

import os
import sys

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # see sppnet/cli/main.py

from sppnet.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", "ops", *sys.argv[1:]]))
