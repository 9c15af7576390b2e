"""The labeling config as the queue reads it: every control tag that labels the image, and what annotations say.

Label Studio ties each control tag to an object tag by ``toName``. examine learns from the tags tied to an
``<Image>``:

- image-level questions: ``<Choices>`` (single: one class; ``choice="multiple"``: several) and ``<Taxonomy>``
  (a path in a tree per selection; several unless ``maxUsages="1"``); these are also pre-annotated;
- region tags: ``<RectangleLabels>``, ``<PolygonLabels>``, ``<BrushLabels>``, ``<KeyPointLabels>``,
  ``<EllipseLabels>`` and ``<Labels>`` (with ``<Rectangle>``, ``<Polygon>``, … beside it): for each label,
  whether the image holds a region of it (an annotation without one says it does not).

Per-region questions (``perRegion="true"``) describe a region, not the image, and are left out.

The label-studio-sdk has a parser (``LabelInterface``) that reads these tags the same way (the tests compare
the two where Label Studio is installed); the backend does not depend on it: label-studio-sdk 2.1 brings
about 40 packages (black, Faker, opencv, nltk, pandas, datamodel-code-generator) and pins numpy below 2.3, for
what is here an ElementTree walk.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

__all__ = [
    "IMAGE_LEVEL_TAGS",
    "REGION_TAGS",
    "ControlTag",
    "annotation_answers",
    "controls_from_config",
    "controls_from_state",
]

#: Control tags that answer a question about the whole image (pre-annotated).
IMAGE_LEVEL_TAGS = ("Choices", "Taxonomy")
#: Control tags that label regions: each label's presence in the image is learned.
REGION_TAGS = ("RectangleLabels", "PolygonLabels", "BrushLabels", "KeyPointLabels", "EllipseLabels", "Labels")
#: Joins the levels of a taxonomy path into one class name.
PATH_SEP = " / "


@dataclass(frozen=True)
class ControlTag:
    """One control tag of the config tied to the image: what the probe learns (and, image-level, proposes)."""

    name: str  # from_name of its results
    to_name: str  # the image tag it labels
    tag: str  # "Choices", "Taxonomy", "RectangleLabels", …
    labels: tuple[str, ...]  # its classes in the config's order (taxonomy: every path, levels joined by " / ")
    kind: str  # examine.targets kind: "class", "multi" or "presence"

    @property
    def image_level(self) -> bool:
        """A question about the whole image (pre-annotated), not regions."""
        return self.tag in IMAGE_LEVEL_TAGS

    def as_dict(self) -> dict[str, Any]:
        """The JSON form kept in a project's state."""
        return {
            "name": self.name,
            "to_name": self.to_name,
            "tag": self.tag,
            "labels": list(self.labels),
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ControlTag:
        """Back from :meth:`as_dict` (KeyError / TypeError on a malformed record)."""
        return cls(
            str(raw["name"]), str(raw["to_name"]), str(raw["tag"]), tuple(map(str, raw["labels"])), str(raw["kind"])
        )

    def result(self, values: list[str], score: float) -> dict[str, Any]:
        """A Label Studio result item proposing ``values`` for this image-level tag, scored by the probe."""
        if self.tag == "Taxonomy":
            value: dict[str, Any] = {"taxonomy": [v.split(PATH_SEP) for v in values]}
        else:
            value = {"choices": list(values)}
        return {
            "from_name": self.name,
            "to_name": self.to_name,
            "type": self.tag.lower(),
            "value": value,
            "score": round(float(score), 4),
        }


def _label(el: ET.Element) -> str | None:
    # A result holds a label's alias when it has one (Label Studio's rule), else its value.
    return el.attrib.get("alias") or el.attrib.get("value") or None


def _taxonomy_paths(el: ET.Element, prefix: tuple[str, ...] = ()) -> list[str]:
    paths: list[str] = []
    for child in el:
        if child.tag != "Choice":
            continue
        name = _label(child)
        if not name:
            continue
        path = prefix + (name,)
        paths.append(PATH_SEP.join(path))
        paths.extend(_taxonomy_paths(child, path))
    return paths


def controls_from_config(label_config: Any) -> list[ControlTag]:
    """Every control tag of ``label_config`` tied to an ``<Image>`` with two or more labels (region tags: one);
    [] for anything else (no image, invalid XML, not a string)."""
    if not isinstance(label_config, str) or not label_config:
        return []
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError:
        return []
    images = {el.attrib["name"] for el in root.iter("Image") if el.attrib.get("name")}
    found: list[ControlTag] = []
    names: set[str] = set()
    for el in root.iter():
        if el.tag not in IMAGE_LEVEL_TAGS + REGION_TAGS:
            continue
        name, to_name = el.attrib.get("name"), el.attrib.get("toName")
        targets = [t.strip() for t in (to_name or "").split(",") if t.strip()]
        image = next((t for t in targets if t in images), None)
        if not name or image is None or name in names or el.attrib.get("perRegion", "").lower() == "true":
            continue  # labels another object (a Text, a second view) or describes one region
        if el.tag == "Taxonomy":
            labels = _taxonomy_paths(el)
            kind = "class" if el.attrib.get("maxUsages") == "1" else "multi"
        else:
            labels = [v for v in map(_label, el.iter("Choice" if el.tag == "Choices" else "Label")) if v]
            if el.tag == "Choices":
                kind = "multi" if el.attrib.get("choice", "single") == "multiple" else "class"
            else:
                kind = "presence"
        labels = list(dict.fromkeys(labels))
        if len(labels) >= (1 if kind == "presence" else 2):
            found.append(ControlTag(name, image, el.tag, tuple(labels), kind))
            names.add(name)
    return found


def controls_from_state(raw: Any) -> list[ControlTag]:
    """The control tags kept in a project's state (records that do not read are skipped)."""
    out = []
    for item in raw if isinstance(raw, list) else []:
        try:
            out.append(ControlTag.from_dict(item))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def annotation_answers(annotation: Any) -> dict[str, list[str]] | None:
    """What one annotation says per control tag (``from_name``): its choices, taxonomy paths or region labels.

    None for a cancelled (skipped) annotation or one that is not an object; ``{}`` for a submitted annotation
    without any (an image with no region drawn). Region labels are listed once each, however many regions.
    """
    if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
        return None
    out: dict[str, list[str]] = {}
    result = annotation.get("result")
    for item in result if isinstance(result, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("from_name"), str):
            continue
        value = item.get("value")
        for key, v in value.items() if isinstance(value, dict) else ():
            if not isinstance(v, list):
                continue
            if key == "taxonomy":
                got = [PATH_SEP.join(map(str, p)) for p in v if isinstance(p, list) and p]
            elif key == "choices" or key.endswith("labels"):
                got = [str(x) for x in v if isinstance(x, (str, int, float))]
            else:
                continue
            kept = out.setdefault(item["from_name"], [])
            kept.extend(g for g in got if g not in kept)
    return out
