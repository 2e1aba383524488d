"""Sub-commands of the ``semloc`` command line: each module has ``build_parser()`` and ``main(argv)``."""
