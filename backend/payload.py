"""Reading what Label Studio sends: ids, label configs, annotations, URIs, JSON bodies.

Every reader either returns a clean value or raises :class:`BadRequest` saying
what is wrong, so a malformed request is answered 400, never 500.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "BadRequest",
    "MAX_ID",
    "PENDING_VERSION",
    "VERSION_PREFIX",
    "display_uri",
    "guess_image_key",
    "image_key_from_config",
    "config_problem",
    "new_version",
    "normal_url",
    "parse_id",
    "parse_json_object",
    "project_id",
]

VERSION_PREFIX = "examine-"
#: The model_version /setup and /predict answer before the first ranking is published.
PENDING_VERSION = VERSION_PREFIX + "pending"
#: Label Studio ids are 64-bit database keys.
MAX_ID = 2**63 - 1


class BadRequest(ValueError):
    """The request is not what Label Studio sends; answered with 400 and this message."""


def parse_id(value: Any, what: str) -> int:
    """A positive 64-bit id from an int or a decimal string; BadRequest naming ``what`` otherwise."""
    if isinstance(value, bool) or value is None:
        raise BadRequest(f"{what} must be a positive integer, got {value!r}")
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,20}", value.strip()):  # ASCII digits: "²", "٣" are not ids
        value = int(value.strip())
    if not isinstance(value, int):
        raise BadRequest(f"{what} must be a positive integer, got {_short(value)}")
    if not 1 <= value <= MAX_ID:
        raise BadRequest(f"{what} must be between 1 and 2^63-1, got {_short(value)}")
    return value


def project_id(value: Any) -> int:
    """Label Studio sends projects as ``1``, ``"1"``, ``"1.1795638417"`` (id.timestamp) or ``{"id": 1}``."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) and "." in value:
        value = value.split(".", 1)[0]
    return parse_id(value, "project id")


def task_ref(value: Any, what: str = "task") -> int:
    """A task (or annotation) id given as an id or as an object with ``id``."""
    if isinstance(value, dict):
        value = value.get("id")
    return parse_id(value, what)


def image_key_from_config(label_config: Any) -> str | None:
    """The task data key the labeling config shows as an image (``<Image value="$image"/>``)."""
    if label_config is None or label_config == "":
        return None
    if not isinstance(label_config, str):
        raise BadRequest(f"the label config ('schema') must be a string of XML, got {type(label_config).__name__}")
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError:
        return None
    for el in root.iter():
        value = el.attrib.get("value", "")
        if el.tag == "Image" and value.startswith("$"):
            return value[1:]
    return None


def config_problem(label_config: Any) -> str | None:
    """Why a project with this labeling config cannot be ranked (no ``<Image value="$…">`` tag), else None.

    An unknown config (None or empty) is no problem: the image key is then guessed from the task data.
    """
    if not isinstance(label_config, str) or not label_config.strip() or image_key_from_config(label_config):
        return None
    try:
        ET.fromstring(label_config)
    except ET.ParseError as exc:
        return f"the labeling config is not valid XML ({exc}); examine leaves the project alone until it is"
    return (
        'the labeling config has no <Image value="$…"> tag, and examine ranks images only: nothing is changed in '
        'the project until the config shows an image (e.g. <Image name="image" value="$image"/>)'
    )


def guess_image_key(data: dict) -> str | None:
    """The first task data key whose value looks like an image reference."""
    for k, v in data.items():
        if isinstance(v, str) and v.startswith(("/data/", "http://", "https://", "s3://", "gs://", "azure-blob://")):
            return k
    return None


def display_uri(uri: str) -> str:
    """A URI safe for logs and /status: no query string (presigned URLs sign it) and no user info."""
    parts = urlsplit(uri)
    if parts.scheme and parts.netloc:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    if parts.query and "/data/local-files/" in uri:
        return uri  # d=<relative path> is the file's name, not a secret
    return urlunsplit(("", "", parts.path, "", ""))


def normal_url(url: str) -> str:
    """A base URL in one form for comparisons: lower-case scheme and host, default port dropped, no trailing /."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    netloc = host if parts.port in (None, default) else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


def new_version() -> str:
    """A fresh model_version name (UTC time to the microsecond)."""
    return VERSION_PREFIX + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object body; BadRequest for anything else (invalid JSON, other types, absurd nesting)."""
    if not raw:
        raise BadRequest("expected a JSON object body, got an empty body")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON ({str(exc)[:100]})") from None
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object body, got a JSON {type(body).__name__}")
    return body


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
