"""In a real browser: "Label All Tasks" in Label Studio opens the task EXAMINE ranked first.

Sets up a small demo through `scripts/demo.py` (the same code path as `make demo`: a real Label
Studio 1.23.2, the backend process, real medical tiles in a Local Files storage) with a small
random-init encoder so nothing is pretrained, then drives headless Debian Chromium with Selenium:
log in, open the project, click "Label All Tasks", read the task id the labeling screen shows and
compare it with the task whose prediction (of the project's current model_version) has the lowest
score. Screenshots go to the test's tmp dir, and to ``docs/`` when ``EXAMINE_SCREENSHOT=1``.

Needs ``chromium`` and ``chromium-driver`` (Debian; `scripts/system-deps.sh` installs them) and
``selenium`` from PyPI. Selenium Manager is never used: the driver path is given explicitly.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.labelstudio import LabelStudio
from examine.encoder import EncoderConfig, create_encoder
from scripts.demo import Demo, DemoConfig, DemoInfo
from tests.lsserver import REPO_ROOT, free_port, label_studio_bin

CHROMIUM = Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
_MISSING = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(_MISSING),
        reason=f"headless browser test needs {' and '.join(_MISSING)} "
        "(Debian: apt-get install chromium chromium-driver; scripts/system-deps.sh does it)",
    ),
]

N_TILES = 30
WAIT_S = 60.0
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,900",
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, DemoInfo]]:
    """A published demo in a temp dir: 30 tiles, a small random-init encoder, short task locks."""
    if not label_studio_bin().is_file():
        pytest.fail(f"needs Label Studio at {label_studio_bin()}: run `make setup-ls`", pytrace=False)
    cfg = DemoConfig(
        root=tmp_path_factory.mktemp("demo"),
        ls_port=free_port(),
        backend_port=free_port(),
        tiles=N_TILES,
        task_lock_ttl=3,
        ready_timeout_s=300,
        label_studio_bin=label_studio_bin(),
    )
    # A small real encoder keeps the test fast; MAE pretraining has its own tests.
    create_encoder(EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8), seed=0).save(
        cfg.model_dir / "encoder"
    )
    with Demo(cfg, say=print) as d:
        yield d, d.setup()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Headless Chromium with a fresh profile, driven through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must not download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver, url: str, email: str, password: str) -> None:
    """Fill Label Studio's login form and wait until it lets us in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/user/login/")
    driver.find_element(By.NAME, "email").send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: "/user/login" not in d.current_url)


def label_all_tasks_button(driver):
    """The Data Manager's "Label All Tasks" button, once it is rendered."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def find(d):
        return next((b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Label All Tasks"), False)

    return WebDriverWait(driver, WAIT_S).until(find)


def shown_task_id(driver) -> int:
    """The task id the labeling screen shows (bottom bar "#<id>"), once its image has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    loaded = "const i = document.querySelector('img[alt=image]'); return !!i && i.complete && i.naturalWidth > 0;"
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(loaded))

    def task_id(d):
        found = d.find_elements(By.CSS_SELECTOR, ".lsf-current-task__task-id")
        match = re.match(r"\s*#?(\d+)", found[0].text) if found else None
        return int(match.group(1)) if match else False

    return WebDriverWait(driver, WAIT_S).until(task_id)


def top_ranked_task(client: LabelStudio, pid: int) -> int:
    """The unlabeled task with the lowest prediction score of the project's current model_version."""
    version = client.get_project(pid)["model_version"]
    labeled = {t["id"] for t in client.iter_tasks(pid) if t.get("is_labeled")}
    scores = {
        p["task"]: p["score"]
        for p in client.list_predictions(project=pid)
        if p.get("model_version") == version and p["task"] not in labeled
    }
    assert len(scores) == N_TILES, f"{len(scores)} tasks scored under {version!r}, expected {N_TILES}"
    return min(scores, key=scores.get)


def save_screenshot(driver, name: str, tmp_path: Path) -> Path:
    """Save to the tmp dir; also to docs/ when EXAMINE_SCREENSHOT=1."""
    path = tmp_path / name
    driver.save_screenshot(str(path))
    if os.environ.get("EXAMINE_SCREENSHOT") == "1":
        docs = REPO_ROOT / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(path, docs / name)
    print(f"screenshot: {path}")
    return path


def test_label_all_tasks_opens_the_top_ranked_task(demo, browser, tmp_path):
    d, info = demo
    assert d.client is not None
    pid = info.project_id
    assert d.client.get_project(pid)["sampling"] == "Uncertainty sampling"  # /next: lowest score first
    expected = top_ranked_task(d.client, pid)
    assert info.queue and info.queue[0].task_id == expected  # what `make demo` prints as rank 1

    log_in(browser, d.cfg.ls_url, d.creds.email, d.creds.password)
    browser.get(f"{d.cfg.ls_url}/projects/{pid}/data")
    button = label_all_tasks_button(browser)
    save_screenshot(browser, "data-manager.png", tmp_path)
    button.click()
    shown = shown_task_id(browser)
    save_screenshot(browser, "label-stream.png", tmp_path)

    assert "labeling=1" in browser.current_url
    assert shown == expected, f"label stream opened task {shown}, EXAMINE ranked task {expected} first"


#: The demo's Choices by the tile's source (the file name ends with it).
SOURCE_CHOICE = {
    "ihc": "Histology (IHC)",
    "retina": "Fundus photograph",
    "microaneurysms": "Fundus photograph",
    "cell": "Light microscopy",
}


def test_label_stream_shows_the_probes_choice_preselected(demo, browser, tmp_path):
    """After labels of two classes, the served task opens with the probe's class already chosen."""
    import time

    from selenium.webdriver.support.ui import WebDriverWait

    d, info = demo
    client, pid = d.client, info.project_id
    assert client is not None
    tasks = sorted(client.iter_tasks(pid), key=lambda t: t["id"])
    by_class: dict[str, list[int]] = {}
    for t in tasks:
        source = t["data"]["image"].rsplit("_", 1)[-1].split(".")[0]
        by_class.setdefault(SOURCE_CHOICE[source], []).append(t["id"])
    for choice, ids in sorted(by_class.items()):
        for tid in ids[:2]:
            result = [{"from_name": "modality", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]
            client.create_annotation(tid, result)
    client.update_project(pid, show_collab_predictions=True)  # "Use predictions to prelabel tasks"
    status = d.backend.wait(pid, lambda s: s["probe"].get("prelabel") and not s["pending"], timeout=120)
    time.sleep(3.5)  # task locks of earlier /next calls expire

    log_in(browser, d.cfg.ls_url, d.creds.email, d.creds.password)
    browser.get(f"{d.cfg.ls_url}/projects/{pid}/data")
    label_all_tasks_button(browser).click()
    shown = shown_task_id(browser)
    version = client.get_project(pid)["model_version"]
    (pred,) = [p for p in client.list_predictions(task=shown) if p["model_version"] == version]
    proposed = pred["result"][0]["value"]["choices"][0]
    checked = (
        "return Array.from(document.querySelectorAll('input:checked'))"
        ".map(i => (i.closest('label') || i.parentElement.parentElement).innerText.trim());"
    )
    picked = WebDriverWait(browser, WAIT_S).until(lambda b: b.execute_script(checked) or False)
    picked = [re.sub(r"\[\d+\]$", "", text).strip() for text in picked]  # the hotkey hint "[1]"
    save_screenshot(browser, "prelabel.png", tmp_path)
    assert picked == [proposed], (
        f"task {shown}: the form shows {picked}, the probe proposed {proposed!r} ({status['probe']})"
    )


def test_an_annotator_labels_through_the_ui_and_is_served_the_head_of_the_ranking_with_each_label(
    demo, browser, tmp_path
):
    """Twenty labels through the real labeling screen (Choice, Submit): after each Submit the screen shows the head
    of the ranking that includes that label, every unlabeled task keeps one current prediction, and the
    project never holds more than tasks + 20 predictions."""
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d, info = demo
    client, pid = d.client, info.project_id
    assert client is not None
    time.sleep(3.5)  # task locks of earlier /next calls expire
    log_in(browser, d.cfg.ls_url, d.creds.email, d.creds.password)
    browser.get(f"{d.cfg.ls_url}/projects/{pid}/data")
    label_all_tasks_button(browser).click()
    shown = shown_task_id(browser)
    files = {t["id"]: t["data"]["image"] for t in client.iter_tasks(pid)}
    checked = (
        "return Array.from(document.querySelectorAll('input:checked'))"
        ".map(i => (i.closest('label') || i.parentElement.parentElement).innerText.trim());"
    )
    click_choice = (
        "const want = arguments[0];"
        "for (const i of document.querySelectorAll('input[type=checkbox], input[type=radio]')) {"
        "  const t = (i.closest('label') || i.parentElement.parentElement).innerText.trim();"
        "  if (t.replace(/\\[\\d+\\]$/, '').trim() === want) { i.click(); return true; } }"
        "return false;"
    )
    head_hits, served, most, labels = 0, 0, 0, client.get_project(pid).get("num_tasks_with_annotations") or 0
    for _ in range(20):
        source = files[shown].rsplit("_", 1)[-1].split(".")[0]
        want = SOURCE_CHOICE[source]
        now = [re.sub(r"\[\d+\]$", "", c).strip() for c in browser.execute_script(checked)]
        if now != [want]:
            assert browser.execute_script(click_choice, want), f"no choice {want!r} on the screen"
        submit = WebDriverWait(browser, WAIT_S).until(
            lambda b: b.find_elements(By.XPATH, "//button[normalize-space()='Submit']") or False
        )[0]
        submit.click()
        labels += 1
        previous = shown
        WebDriverWait(browser, WAIT_S).until(lambda b, p=previous: shown_task_id(b) != p)
        shown = shown_task_id(browser)
        status = d.backend.wait(pid, lambda s, n=labels: s["queue_labels"] >= n and not s["pending"], timeout=60)
        served += 1
        head_hits += shown == status["queue_head"][0]
        versions = client.list_model_versions(pid)
        assert sum(versions.values()) <= N_TILES + 20, versions
        most = max(most, sum(versions.values()))
    save_screenshot(browser, "after-20-labels.png", tmp_path)
    assert head_hits >= 0.9 * served, f"{head_hits} of {served} serves were the head of the ranking with the label"
    version = client.get_project(pid)["model_version"]
    for t in client.iter_tasks(pid, fields="all"):
        if not t.get("total_annotations"):
            assert sum(p["model_version"] == version for p in t.get("predictions") or []) == 1, t["id"]
    print(
        f"UI: {head_hits}/{served} serves were the head of the ranking that includes the label just submitted; "
        f"the project held at most {most} predictions for {N_TILES} tasks"
    )


BOX_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image"><Label value="Stained"/><Label value="Vessel"/></RectangleLabels>
</View>"""
#: The box drawn on a tile of each source (none on the others: an image without a finding).
SOURCE_BOX = {"ihc": "Stained", "retina": "Vessel", "microaneurysms": "Vessel"}


def test_an_annotator_draws_boxes_and_each_serve_reflects_the_box_before_it(demo, browser, tmp_path):
    """A RectangleLabels project on the same Label Studio and backend: ten tasks labeled in the real labeling
    screen (pick a label, drag a box, or none on an image without a finding, Submit); each serve is among the
    first two of the ranking that knows the box just drawn, and the probe learns from the boxes."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from examine.datasets import medical_tiles_with_sources
    from tests.backend_server import png

    d, _ = demo
    client = d.client
    assert client is not None
    pid = client.create_project("examine boxes (browser)", BOX_CONFIG)["id"]
    tiles, sources = medical_tiles_with_sources(24, size=64, seed=5)
    ids = sorted(
        client.import_files(pid, {f"box{i:02d}_{s}.png": png(t) for i, (t, s) in enumerate(zip(tiles, sources))})
    )
    source_of = dict(zip(ids, sources))
    auth = {"auth_method": "NONE"}
    if d.cfg.basic_auth:
        auth = {
            "auth_method": "BASIC_AUTH",
            "basic_auth_user": d.cfg.basic_auth[0],
            "basic_auth_pass": d.cfg.basic_auth[1],
        }
    client.add_ml_backend(pid, d.cfg.backend_url, "examine", **auth)
    d.backend.wait(pid, lambda s: s["published_version"] and not s["pending"], timeout=180)

    log_in(browser, d.cfg.ls_url, d.creds.email, d.creds.password)
    browser.get(f"{d.cfg.ls_url}/projects/{pid}/data")
    label_all_tasks_button(browser).click()
    shown = shown_task_id(browser)
    pick_label = (
        "const want = arguments[0];"
        "for (const el of document.querySelectorAll('.lsf-label')) {"
        "  if (el.innerText.trim().startsWith(want)) { el.click(); return true; } }"
        "return false;"
    )
    hits = first = 0
    for n in range(1, 11):
        label = SOURCE_BOX.get(source_of[shown])
        if label is not None:
            assert browser.execute_script(pick_label, label), f"no label {label!r} on the screen"
            image = browser.find_element(By.CSS_SELECTOR, "img[alt=image]")
            drag = ActionChains(browser).move_to_element_with_offset(image, -30, -30).click_and_hold()
            for _ in range(6):
                drag = drag.move_by_offset(10, 10)
            drag.release().perform()
        submit = WebDriverWait(browser, WAIT_S).until(
            lambda b: b.find_elements(By.XPATH, "//button[normalize-space()='Submit']") or False
        )[0]
        submit.click()
        previous = shown
        WebDriverWait(browser, WAIT_S).until(lambda b, p=previous: shown_task_id(b) != p)
        (ann,) = client.list_annotations(previous)
        boxes = [r["value"]["rectanglelabels"] for r in ann["result"] if r.get("type") == "rectanglelabels"]
        assert boxes == ([[label]] if label else []), f"task {previous}: saved {ann['result']}"
        shown = shown_task_id(browser)
        status = d.backend.wait(pid, lambda s, k=n: s["queue_labels"] >= k and not s["pending"], timeout=60)
        # Label Studio's uncertainty sampling serves one of the first (annotators + 1) tasks of the ranking
        # (projects/functions/next_task.py), as the team benchmark counts "reflects every label"
        hits += shown in status["queue_head"][:2]
        first += shown == status["queue_head"][0]
    save_screenshot(browser, "boxes-after-10-labels.png", tmp_path)
    learned = status["probe"]["tags"]["box"]
    assert learned["labels"] == 10 and learned["counts"]["Stained"] + learned["counts"]["Vessel"] >= 1
    assert hits == 10, f"{hits} of 10 serves were among the first two of the ranking that knew the box before them"
    print(f"UI, boxes: 10/10 serves among the first two of the ranking with the box just drawn, {first} the first")
