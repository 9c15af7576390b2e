"""The backend as a real gunicorn process for the end-to-end tests (the launcher is the demo's: scripts/services.py)."""

from scripts.services import BackendServer

__all__ = ["BackendServer"]
