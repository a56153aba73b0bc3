"""Running the ``sppnet`` CLI in-process as a user would, and reading its one-line errors."""

from __future__ import annotations

from collections.abc import Sequence

from sppnet.cli.main import main


def cli_error(capsys, argv: Sequence[str]) -> str:
    """Run ``sppnet ARGV``; it must exit 2 with exactly one line on stderr (no traceback).
    Returns that line."""
    capsys.readouterr()
    rc = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, f"exit code {rc}, stderr {err[-3:]}"
    # "sppnet COMMAND: error: ..." (a sub-command's parser: "sppnet bench ops: error: ...")
    head = err[0].split(": error: ")[0] if err else ""
    assert len(err) == 1 and head in (f"sppnet {argv[0]}", f"sppnet {' '.join(argv[:2])}"), err
    return err[0]
