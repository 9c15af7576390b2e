"""examine.hub: the check of a named pretrained model that runs before torch and timm are imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from examine import hub
from tests.hub_cache import hub_snapshot


@pytest.fixture
def empty_cache(hub_cache, monkeypatch):
    """An empty Hugging Face cache and a hub that cannot be reached (nothing listens on the discard port)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return hub_cache


def _cache_weights(cache: Path, repo: str, filename: str = "model.safetensors") -> None:
    (hub_snapshot(cache, repo) / filename).write_bytes(b"weights")


def test_the_shipped_repositories_are_timms():
    """Every shipped name that the installed timm knows maps to the repository timm loads it from; a timm upgrade
    that moves weights fails here (rewrite the file with scripts/update_timm_hub_repos.py)."""
    from scripts.update_timm_hub_repos import timm_hub_repos

    shipped = hub._shipped_repos()
    installed = timm_hub_repos()
    wrong = {n: (r, installed[n]) for n, r in shipped.items() if n in installed and installed[n] != r}
    assert not wrong, f"run scripts/update_timm_hub_repos.py: {sorted(wrong.items())[:5]}"
    assert len(set(shipped) & set(installed)) >= 0.9 * len(installed)
    # Names whose weights live under another name or in another organisation are shipped as such.
    assert shipped["vit_base_patch16_224.mae"] == "timm/vit_base_patch16_224.mae"
    assert not all(r == f"timm/{n}" for n, r in shipped.items())


def test_a_missing_model_fails_at_once_offline(empty_cache):
    with pytest.raises(hub.WeightsUnavailable, match=r"'vit_base_patch16_224.mae'.*127\.0\.0\.1 cannot be reached"):
        hub.check_named_weights("vit_base_patch16_224.mae")
    with pytest.raises(hub.WeightsUnavailable, match="--weights PATH"):
        hub.check_named_weights("hf-hub:lab/pathology-vit")


def test_huggingface_offline_mode_is_named(empty_cache, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: pytest.fail("no network check in offline mode"))
    with pytest.raises(hub.WeightsUnavailable, match="HF_HUB_OFFLINE is set"):
        hub.check_named_weights("vit_small_patch16_224.dino")


def test_cached_weights_pass_without_the_network(empty_cache, monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: pytest.fail("cached weights need no network"))
    repo = hub.known_hub_repo("vit_base_patch16_clip_quickgelu_224.openai")
    assert repo == "timm/vit_base_patch16_clip_224.openai"  # stored under another name
    _cache_weights(empty_cache, repo, "open_clip_pytorch_model.bin")
    hub.check_named_weights("vit_base_patch16_clip_quickgelu_224.openai")
    _cache_weights(empty_cache, "lab/pathology-vit")
    hub.check_named_weights("hf-hub:lab/pathology-vit")


@pytest.mark.parametrize(
    "model",
    [
        "vit_tiny_patch16_224",  # no tag: no pretrained weights
        "vit_base_patch16_224.not_a_tag",  # unknown to the shipped list: timm's own loading decides
        "vit_giant_patch16_gap_224.in22k_ijepa",  # weights from a URL, not the hub
        "resnet50.a1_in1k",  # not a ViT: examine.encoder says so
    ],
)
def test_what_is_not_known_without_timm_is_left_to_timm(empty_cache, model):
    hub.check_named_weights(model)


def test_the_command_line_fails_before_importing_torch(tmp_path):
    """`examine rank --model NAME` offline: the clear error, exit status 2, and neither torch nor timm imported."""
    images = tmp_path / "images"
    images.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    code = (
        "import sys; from examine.cli import main; "
        f"rc = main(['rank', {str(images)!r}, '--model', 'vit_base_patch16_224.mae', "
        f"'--model-dir', {str(tmp_path / 'model')!r}]); "
        "print(rc, 'torch' in sys.modules, 'timm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr
    assert "'vit_base_patch16_224.mae' are not in the Hugging Face cache" in out.stderr
    assert "127.0.0.1 cannot be reached" in out.stderr and "--weights PATH" in out.stderr
    assert not (tmp_path / "model").exists()
