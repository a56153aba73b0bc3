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
    assert len(err) == 1 and err[0].startswith(f"sppnet {argv[0]}: error: "), err
    return err[0]
