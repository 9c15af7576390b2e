"""backend.label_config: the tags on the image, read as label-studio-sdk's LabelInterface reads them."""

from __future__ import annotations

import json
import subprocess

import pytest

from backend.label_config import ControlTag, annotation_answers, controls_from_config
from backend.state import ProjectState
from scripts.services import label_studio_bin

IMAGE = '<Image name="img" value="$image"/>'
CONFIGS = {
    "boxes": f'<View>{IMAGE}<RectangleLabels name="box" toName="img"><Label value="Nodule"/><Label value="Mass"/>'
    "</RectangleLabels></View>",
    "brush": f'<View>{IMAGE}<BrushLabels name="mask" toName="img"><Label value="Tumour"/></BrushLabels></View>',
    "everything": f"<View>{IMAGE}"
    '<Choices name="tissue" toName="img"><Choice value="tumour"/><Choice value="stroma"/></Choices>'
    '<Choices name="quality" toName="img" choice="multiple"><Choice value="blurred"/><Choice value="dark"/>'
    '<Choice value="ok" alias="fine"/></Choices>'
    '<Taxonomy name="dx" toName="img"><Choice value="benign"><Choice value="cyst"/></Choice>'
    '<Choice value="malignant"/></Taxonomy>'
    '<PolygonLabels name="gland" toName="img"><Label value="Gland"/><Label value="Lumen"/></PolygonLabels>'
    '<KeyPointLabels name="kp" toName="img"><Label value="Apex"/></KeyPointLabels>'
    '<EllipseLabels name="ell" toName="img"><Label value="Cell"/></EllipseLabels>'
    '<Labels name="lab" toName="img"><Label value="Vessel"/></Labels><Rectangle name="rect" toName="img"/>'
    '<Choices name="per_box" toName="img" perRegion="true"><Choice value="a"/><Choice value="b"/></Choices>'
    "</View>",
    "text_and_image": '<View><Text name="note" value="$note"/><Image name="img" value="$image"/>'
    '<Choices name="sentiment" toName="note"><Choice value="good"/><Choice value="bad"/></Choices>'
    '<RectangleLabels name="box" toName="img"><Label value="Cell"/></RectangleLabels></View>',
}


def test_every_control_tag_on_the_image_is_read():
    tags = {t.name: t for t in controls_from_config(CONFIGS["everything"])}
    assert list(tags) == ["tissue", "quality", "dx", "gland", "kp", "ell", "lab"]  # per-region Choices left out
    assert (tags["tissue"].kind, tags["quality"].kind, tags["gland"].kind) == ("class", "multi", "presence")
    assert tags["quality"].labels == ("blurred", "dark", "fine")  # an alias is what results hold
    assert tags["dx"].labels == ("benign", "benign / cyst", "malignant") and tags["dx"].kind == "multi"
    assert [t.image_level for t in tags.values()] == [True, True, True, False, False, False, False]
    assert [t.name for t in controls_from_config(CONFIGS["text_and_image"])] == ["box"]
    assert ControlTag.from_dict(tags["dx"].as_dict()) == tags["dx"]


def test_results_for_image_level_tags_are_what_label_studio_stores():
    tags = {t.name: t for t in controls_from_config(CONFIGS["everything"])}
    assert tags["dx"].result(["benign / cyst"], 0.81234) == {
        "from_name": "dx",
        "to_name": "img",
        "type": "taxonomy",
        "value": {"taxonomy": [["benign", "cyst"]]},
        "score": 0.8123,
    }
    assert tags["quality"].result(["dark", "fine"], 0.6)["value"] == {"choices": ["dark", "fine"]}


def test_answers_read_regions_taxonomy_and_choices():
    ann = {
        "result": [
            {"from_name": "gland", "type": "polygonlabels", "value": {"points": [[1, 2]], "polygonlabels": ["Gland"]}},
            {"from_name": "gland", "type": "polygonlabels", "value": {"points": [[3, 4]], "polygonlabels": ["Lumen"]}},
            {"from_name": "gland", "type": "polygonlabels", "value": {"points": [[5, 6]], "polygonlabels": ["Gland"]}},
            {"from_name": "dx", "type": "taxonomy", "value": {"taxonomy": [["benign", "cyst"], ["malignant"]]}},
            {
                "from_name": "mask",
                "type": "brushlabels",
                "value": {"format": "rle", "rle": [1, 2], "brushlabels": ["T"]},
            },
            {"type": "relation", "from_id": "a", "to_id": "b"},
        ]
    }
    assert annotation_answers(ann) == {"gland": ["Gland", "Lumen"], "dx": ["benign / cyst", "malignant"], "mask": ["T"]}


def test_a_state_saved_with_only_the_first_choices_tag_reads_as_controls():
    old = {"pid": 3, "choices": {"name": "c", "to_name": "img", "choices": ["a", "b"], "multiple": True}}
    state = ProjectState.from_json(old)
    assert state.controls == [{"name": "c", "to_name": "img", "tag": "Choices", "labels": ["a", "b"], "kind": "multi"}]


_SDK_READ = """
import json, sys
from label_studio_sdk.label_interface import LabelInterface
out = {}
for key, config in json.loads(sys.stdin.read()).items():
    li = LabelInterface(config)
    images = {o.name for o in li.objects if o.tag == "Image"}
    out[key] = [[c.name, c.tag] for c in li.controls if set(c.to_name) & images and c.attr.get("perRegion") != "true"
                and c.tag in ("Choices", "Taxonomy", "RectangleLabels", "PolygonLabels", "BrushLabels",
                              "KeyPointLabels", "EllipseLabels", "Labels")]
print(json.dumps(out))
"""


def test_the_same_tags_as_label_studio_sdks_label_interface():
    """Where Label Studio is installed (its environment carries label-studio-sdk), its parser finds the same
    control tags on the image as ours, for each config above."""
    python = label_studio_bin().parent / "python"
    if not python.exists():
        pytest.skip(f"Label Studio's environment is not installed ({python})")
    done = subprocess.run(
        [str(python), "-c", _SDK_READ], input=json.dumps(CONFIGS), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout)
    for key, config in CONFIGS.items():
        assert [[t.name, t.tag] for t in controls_from_config(config)] == theirs[key], key
