"""A Hugging Face cache of the test's own, laid out as huggingface_hub lays it out (tests never download)."""

from __future__ import annotations

from pathlib import Path

import pytest

SNAPSHOT = "0" * 40


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache for this test (huggingface_hub reads its constants at call time)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def hub_snapshot(cache: Path, repo: str) -> Path:
    """The snapshot folder of ``repo`` in ``cache``, with refs/main naming it; the weight files go inside."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(SNAPSHOT)
    return snap
