"""HTTP plumbing of the Label Studio client: its error, its retry policy, URL origins and safe display."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from urllib3.util.retry import Retry

__all__ = ["LabelStudioError", "is_personal_access_token"]

_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_CLOUD_SCHEMES = ("s3", "gs", "azure-blob", "azure-spi")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_REDIRECTS = 5
_CHUNK = 1 << 16


class LabelStudioError(RuntimeError):
    """A Label Studio request failed. ``status`` is the HTTP status, or None when none came back."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Retry(Retry):
    """`Retry` that also retries POST on 429 and 503 (the server did not process the request)."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() == "POST" and status_code in (429, 503):
            return bool(self.total) if self.total is not None else True
        return super().is_retry(method, status_code, has_retry_after)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in; port None when it is not a number."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def _display(url: str) -> str:
    """A URL safe for messages: absolute URLs lose their query string (presigned URLs sign it)."""
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return url


def is_personal_access_token(key: str) -> bool:
    """True when ``key`` looks like a JWT (a Label Studio personal access token)."""
    return bool(_JWT_RE.match(key))
