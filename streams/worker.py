"""``python -m streams.worker``: run one streams worker in the foreground.

SIGTERM and SIGINT ask for a clean stop: the current batch finishes, a final checkpoint
snapshots every changed slice and commits, and the worker leaves its group, so a
restarted or another worker resumes exactly there.
"""

from __future__ import annotations

import logging

from runtime.service import serve
from schemas.settings import Settings, load_settings
from streams.app import create_app

log = logging.getLogger(__name__)


def run(settings: Settings) -> None:
    def start(stop) -> None:
        app = create_app(settings)
        log.info(
            "streams worker %s of group %s on %s", settings.worker_id, settings.app_id, settings.topics.events
        )
        app.run(stop)

    serve("streams", start)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run(load_settings())


if __name__ == "__main__":
    main()
