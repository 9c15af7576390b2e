"""HTTP plumbing of the Label Studio client: its error, its retry policy, URL origins and safe display."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from urllib3.util.retry import Retry

__all__ = ["LabelStudioError", "is_personal_access_token"]

_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_CLOUD_SCHEMES = ("s3", "gs", "azure-blob", "azure-spi")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_REDIRECTS = 5
_CHUNK = 1 << 16
# Label Studio's data paths: the only ones an image reference may name, and the only ones that get the key on a
# download (uploads, local files, cloud storage's presign and resolve proxies, uploads kept in cloud storage), never
# the API.
_DATA_PATH = re.compile(r"^/(data/[^?#]*|(tasks|projects)/\d+/(presign|resolve)/?|storage-data/uploaded/?)$")


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


def is_data_path(path: str) -> bool:
    """True for a Label Studio data path (``/data/…`` or ``/tasks/<id>/presign/``) with no ``.``/``..`` segment."""
    plain = unquote(path)
    return bool(_DATA_PATH.match(plain)) and not any(seg in (".", "..") for seg in plain.split("/"))


def error_from_response(
    method: str, what: str, resp: requests.Response, hint: str, redact: Callable[[str], str]
) -> LabelStudioError:
    """The error of a failed answer: status, Label Studio's detail (secrets redacted, never an HTML page), a hint."""
    detail = ""
    try:
        body = resp.json()
        if isinstance(body, dict):
            detail = str(body.get("detail") or "")
            if body.get("validation_errors"):
                detail = f"{detail} {json.dumps(body['validation_errors'])[:500]}".strip()
        if not detail:
            detail = json.dumps(body)[:300]
    except ValueError:
        if "html" not in resp.headers.get("Content-Type", ""):
            detail = resp.text[:300]
    msg = f"{method} {what} -> {resp.status_code}"
    msg += f": {redact(detail)}" if detail else f" {resp.reason or ''}".rstrip()
    if hint:
        msg += f" ({hint})"
    return LabelStudioError(msg, status=resp.status_code)
