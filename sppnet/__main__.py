"""``python -m sppnet ...`` works like the ``sppnet`` console script."""

from .cli.main import main

raise SystemExit(main())
