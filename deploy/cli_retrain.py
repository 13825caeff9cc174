"""``driftctl train``, ``driftctl models list|show|rollback``: the retraining commands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the driftctl parser."""
