"""Entry point: ``gunicorn backend._wsgi:app``, or ``python -m backend._wsgi`` (gunicorn, settings from the env)."""

from __future__ import annotations

import logging
import os
import sys

from backend.app import create_app
from backend.bind import with_gunicorn_bind
from backend.settings import Settings


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry lines show request URLs (signed queries)


def main() -> int:
    """Run gunicorn with one worker (the job queue is in-process) and THREADS threads."""
    from gunicorn.app.base import BaseApplication

    settings = Settings.from_env()
    _logging(settings)

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("threads", settings.threads)
            self.cfg.set("timeout", 300)
            self.cfg.set("loglevel", settings.log_level.lower())
            self.cfg.set("limit_request_line", 8190)

        def load(self):
            return create_app(settings)

    _Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
elif __name__ != "__mp_main__":  # a decoding worker process (spawn) imports this module again: no second backend there
    _settings = with_gunicorn_bind(Settings.from_env(), sys.argv, os.environ)
    _logging(_settings)
    app = create_app(_settings)
