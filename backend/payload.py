"""Reading what Label Studio sends: ids, label configs, annotations, URIs, JSON bodies.

Every reader either returns a clean value or raises :class:`BadRequest` saying
what is wrong, so a malformed request is answered 400, never 500.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "BadRequest",
    "ChoicesTag",
    "MAX_ID",
    "PENDING_VERSION",
    "VERSION_PREFIX",
    "annotation_label",
    "annotation_labels",
    "choices_from_config",
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


@dataclass(frozen=True)
class ChoicesTag:
    """The labeling config's first ``<Choices>`` tag: what the probe learns and pre-annotates."""

    name: str  # from_name of results
    to_name: str  # the image tag it labels
    choices: tuple[str, ...]  # the classes, in the config's order
    multiple: bool  # choice="multiple"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form kept in a project's state."""
        return {"name": self.name, "to_name": self.to_name, "choices": list(self.choices), "multiple": self.multiple}

    def result(self, values: list[str], score: float) -> dict[str, Any]:
        """A Label Studio result item choosing ``values``, with the probe's probability as its score."""
        return {
            "from_name": self.name,
            "to_name": self.to_name,
            "type": "choices",
            "value": {"choices": list(values)},
            "score": round(float(score), 4),
        }


def choices_from_config(label_config: Any) -> ChoicesTag | None:
    """The first ``<Choices>`` tag of an ``<Image>`` with a ``name`` and at least two ``<Choice value=…>``; else None."""
    if not isinstance(label_config, str) or not label_config:
        return None
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError:
        return None
    images = {el.attrib.get("name") for el in root.iter("Image") if el.attrib.get("name")}
    for el in root.iter("Choices"):
        name, to_name = el.attrib.get("name"), el.attrib.get("toName")
        if images and not images & {t.strip() for t in (to_name or "").split(",")}:
            continue  # it labels another object (a Text, a second view): says nothing of the image
        found = (c.attrib.get("value") or c.attrib.get("alias") for c in el.iter("Choice"))
        values = list(dict.fromkeys(v for v in found if v))
        if name and to_name and len(values) >= 2:
            return ChoicesTag(name, to_name, tuple(values), el.attrib.get("choice", "single") == "multiple")
    return None


def annotation_labels(annotation: Any, from_name: str | None = None) -> list[str]:
    """The class labels of an annotation's first labeling result (choices, labels, rectanglelabels, …).

    With ``from_name`` only result items of that control tag count (the config's Choices tag); a
    multi-choice answer gives all its choices. Cancelled annotations give none.
    """
    if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
        return []
    result = annotation.get("result")
    for item in result if isinstance(result, list) else []:
        if from_name is not None and isinstance(item, dict) and item.get("from_name") != from_name:
            continue
        value = item.get("value") if isinstance(item, dict) else None
        for key, v in value.items() if isinstance(value, dict) else ():
            if key in ("choices", "labels") or key.endswith("labels"):
                if isinstance(v, list) and v:
                    return [str(x) for x in v]
    return []


def annotation_label(annotation: Any, from_name: str | None = None) -> str | None:
    """The first of :func:`annotation_labels`, or None."""
    labels = annotation_labels(annotation, from_name)
    return labels[0] if labels else None


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
