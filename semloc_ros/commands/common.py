"""Options shared by several commands (one definition each)."""

from __future__ import annotations

import argparse
import os

DEFAULT_THREADS = min(4, os.cpu_count() or 1)


def view_shift(text: str) -> float:
    """argparse type of a database view: a sideways shift, as a fraction of the image width in (-0.5, 0.5)."""
    value = float(text)
    if not -0.5 < value < 0.5:
        raise argparse.ArgumentTypeError(f"{text}: a view shift is a fraction of the width in (-0.5, 0.5)")
    return value


class _DistinctViews(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        if len(set(values)) != len(values):
            parser.error(f"{option_string}: the shifts must be distinct")
        setattr(namespace, self.dest, list(values))


def add_views_argument(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    """The database-views option (``build-db --views``, ``evaluate --database-views``)."""
    parser.add_argument(flag, type=view_shift, nargs="+", default=[0.0], action=_DistinctViews, metavar="SHIFT",
                        help=help_text)
