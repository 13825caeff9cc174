"""``python -m streams.worker``: run the detection agents in the foreground."""

from __future__ import annotations

import faust  # noqa: F401  (imported first: faust patches the event loop policy)
from mode import Worker

from schemas.settings import Settings, load_settings
from streams.app import create_app


def run(settings: Settings, loglevel: str = "INFO") -> None:
    app = create_app(settings)
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()


def main() -> None:
    run(load_settings())


if __name__ == "__main__":
    main()
