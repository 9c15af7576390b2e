"""Entry point: ``gunicorn backend._wsgi:app``, or ``python -m backend._wsgi`` (gunicorn, settings from the env)."""

from __future__ import annotations

import sys

from backend.app import create_app
from backend.settings import Settings


def main() -> int:
    from gunicorn.app.base import BaseApplication

    settings = Settings.from_env()

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("threads", settings.threads)
            self.cfg.set("timeout", 300)
            self.cfg.set("loglevel", settings.log_level.lower())

        def load(self):
            return create_app(settings)

    _Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
else:
    app = create_app()
