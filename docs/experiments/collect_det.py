"""Copy a finished train-det run's small outputs (no checkpoints, no caches) to docs/results.

Usage: python docs/experiments/collect_det.py RUN_DIR DEST_DIR
Copies config.json, train_times.json, finetune_metrics.jsonl (+ curves PNG), model/detector.json,
eval/{results.json,pr_curves.png} and the same two files of every further evaluation of the run's
detector (eval_<name>/, e.g. eval_edgeboxes/ from `sppnet eval-det --proposer edgeboxes`).
Refuses a DEST_DIR that holds another run's results.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

FILES = ("config.json", "train_times.json", "finetune_metrics.jsonl", "finetune_curves.png",
         "model/detector.json",
         "eval/results.json", "eval/pr_curves.png")


def main() -> int:
    run, dest = Path(sys.argv[1]), Path(sys.argv[2])
    if not (run / "eval" / "results.json").is_file():
        print(f"collect_det: {run} has no eval/results.json (not finished)", file=sys.stderr)
        return 2
    old = dest / "config.json"
    if old.is_file() and json.loads(old.read_text()).get("config_hash") != json.loads(
            (run / "config.json").read_text()).get("config_hash"):
        print(f"collect_det: {dest} holds another configuration's results", file=sys.stderr)
        return 2
    extra = [f"{d.name}/{f}" for d in sorted(run.glob("eval_*")) if d.is_dir()
             for f in ("results.json", "pr_curves.png")]
    for f in (*FILES, *extra):
        src = run / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    print(f"collect_det: {run} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
