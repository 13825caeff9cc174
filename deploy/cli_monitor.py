"""``driftctl report`` and other monitoring commands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the driftctl parser."""
