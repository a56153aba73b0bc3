"""The ``sppnet`` console script: one module per subcommand, each with ``get_args_parser`` and
``main(args) -> int``."""
