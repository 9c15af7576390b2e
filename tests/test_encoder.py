"""The ViT encoder: weights from local files only, versions, deterministic embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from examine.datasets import medical_tiles
from examine.embed import embed_arrays
from examine.encoder import Encoder, EncoderConfig, EncoderError, create_encoder
from tests.hub_cache import hub_snapshot

CFG = EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8)


@pytest.fixture(scope="module")
def tiles():
    return medical_tiles(24, size=48, seed=3)


def test_same_seed_same_weights_same_version():
    a, b = create_encoder(CFG, seed=1), create_encoder(CFG, seed=1)
    assert a.version == b.version
    assert create_encoder(CFG, seed=2).version != a.version
    assert a.version.startswith("vit_tiny_patch16_224-p8-32px-mean-")


def test_embeddings_identical_across_runs_and_batch_sizes(tiles):
    enc = create_encoder(CFG, seed=0)
    e1 = embed_arrays(tiles, enc, batch_size=24, device="cpu")
    e2 = embed_arrays(tiles, enc, batch_size=5, device="cpu")
    e3 = embed_arrays(tiles, create_encoder(CFG, seed=0), batch_size=1, device="cpu")
    assert e1.shape == (24, enc.dim) and e1.dtype == np.float32
    np.testing.assert_allclose(e1, e2, atol=1e-5, rtol=0)
    np.testing.assert_allclose(e1, e3, atol=1e-5, rtol=0)


def test_cls_pool_differs_from_mean(tiles):
    mean = embed_arrays(tiles[:4], create_encoder(CFG), device="cpu")
    cls = embed_arrays(tiles[:4], create_encoder(EncoderConfig(CFG.model, 32, 8, "cls")), device="cpu")
    assert not np.allclose(mean, cls)


@pytest.mark.parametrize(("img_size", "pool", "cells"), [(32, "grid", 2), (32, "grid4", 4), (48, "grid4", 4)])
def test_grid_read_outs_against_loops(img_size, pool, cells):
    """Each grid cell is the mean of the final tokens whose patches fall in it, channel-major as stored."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, img_size, img_size)
    enc = create_encoder(EncoderConfig(CFG.model, img_size, 8, pool), seed=5).eval()
    with torch.no_grad():
        got = enc(x).numpy()
        tokens = enc.vit.forward_features(x)[:, enc.vit.num_prefix_tokens :].numpy()
    side = img_size // 8  # tokens per side: 4 (every 4 × 4 cell one token) or 6 (a 4 × 4 cell pools 1.5 tokens)
    ref = np.zeros((2, tokens.shape[2], cells, cells))
    for i in range(cells):
        for j in range(cells):
            # adaptive pooling's bins: [floor(i·side/cells), ceil((i+1)·side/cells))
            r0, r1 = (i * side) // cells, -((-(i + 1) * side) // cells)
            c0, c1 = (j * side) // cells, -((-(j + 1) * side) // cells)
            rows = [r * side + c for r in range(r0, r1) for c in range(c0, c1)]
            ref[:, :, i, j] = tokens[:, rows].mean(axis=1)
    assert got.shape == (2, enc.dim) == (2, tokens.shape[2] * cells * cells)
    np.testing.assert_allclose(got, ref.reshape(2, -1), atol=1e-5, rtol=0)


def test_save_load_round_trip(tmp_path, tiles):
    enc = create_encoder(CFG, seed=4)
    enc.save(tmp_path)
    back = Encoder.load(tmp_path)
    assert back.version == enc.version and back.config == enc.config
    np.testing.assert_array_equal(
        embed_arrays(tiles[:3], back, device="cpu"), embed_arrays(tiles[:3], enc, device="cpu")
    )


def test_official_mae_pth_with_decoder_keys_loads(tmp_path):
    enc = create_encoder(CFG, seed=5)
    sd = {k: v.clone() for k, v in enc.vit.state_dict().items()}
    sd["decoder_embed.weight"] = torch.zeros(4, 4)
    sd["mask_token"] = torch.zeros(1, 1, 4)
    torch.save({"model": sd}, tmp_path / "mae.pth")
    loaded = create_encoder(CFG, weights=tmp_path / "mae.pth")
    assert loaded.version == enc.version


def test_weights_at_another_resolution_are_resampled(tmp_path):
    enc = create_encoder(CFG, seed=6)
    enc.save(tmp_path)
    bigger = create_encoder(EncoderConfig(CFG.model, 64, 8), weights=tmp_path / "encoder.safetensors")
    assert bigger.vit.pos_embed.shape[1] == 1 + 64


def test_pretrained_name_missing_from_the_cache_is_a_clear_error(hub_cache):
    with pytest.raises(EncoderError, match="not in the Hugging Face cache.*--weights PATH"):
        create_encoder(EncoderConfig("vit_base_patch16_224.mae", img_size=224))


def test_an_unreachable_hub_is_named_at_once_not_retried(hub_cache, monkeypatch):
    """Offline, a named pretrained model missing from the cache fails before timm builds or downloads anything."""
    import timm

    from examine import hub

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert not hub.hub_reachable(timeout=1.0)
    built = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: built.append(a))
    with pytest.raises(EncoderError, match="127.0.0.1 cannot be reached.*--weights PATH"):
        create_encoder(EncoderConfig("vit_base_patch16_224.mae", img_size=224))
    assert built == []


def test_an_unknown_tag_offline_is_named_not_a_traceback(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(EncoderError, match="timm cannot build 'vit_base_patch16_224.nope'.*Invalid pretrained tag"):
        create_encoder(EncoderConfig("vit_base_patch16_224.nope", img_size=224))


def _write_hub_cache(cache, repo: str, vit: torch.nn.Module, config: dict) -> None:
    """A Hugging Face cache entry as huggingface_hub writes it: blobs, a snapshot and refs/main."""
    import json

    from safetensors.torch import save_file

    snap = hub_snapshot(cache, repo)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps(config))


def test_pretrained_weights_load_offline_from_the_hub_cache(hub_cache, tmp_path, tiles):
    """A tagged timm name and an hf-hub: id (with extra model arguments) load through timm from a local cache."""
    import timm

    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8)
    cfg = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 0,
        "num_features": 192,
        "model_args": {"img_size": 32, "patch_size": 8},
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    _write_hub_cache(hub_cache, "timm/vit_tiny_patch16_224.augreg_in21k", source, cfg)
    _write_hub_cache(hub_cache, "lab/tiny-pathology", source, cfg)
    want = embed_arrays(tiles, Encoder(CFG, source.eval()))
    for name, kwargs in (
        ("vit_tiny_patch16_224.augreg_in21k", ()),
        ("hf-hub:lab/tiny-pathology", (("init_values", None),)),
    ):
        enc = create_encoder(EncoderConfig(name, img_size=32, patch_size=8, model_kwargs=kwargs))
        np.testing.assert_allclose(embed_arrays(tiles, enc), want, atol=1e-5)
        enc.save(tmp_path / "saved")  # a saved pretrained encoder reloads from its own file
        again = Encoder.load(tmp_path / "saved")
        assert again.version == enc.version and "/" not in enc.version
        np.testing.assert_allclose(embed_arrays(tiles, again), want, atol=1e-5)


def test_mismatched_weights_are_refused(tmp_path):
    create_encoder(CFG).save(tmp_path)
    with pytest.raises(EncoderError, match="does not fit"):
        create_encoder(EncoderConfig("vit_small_patch16_224", 32, 8), weights=tmp_path / "encoder.safetensors")


@pytest.mark.parametrize("bad", ["missing.safetensors", "garbage.pth"])
def test_unreadable_weight_files(tmp_path, bad):
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match=bad.split(".")[0]):
        create_encoder(CFG, weights=tmp_path / bad)


def test_not_a_vit_is_refused():
    with pytest.raises(EncoderError, match="Vision Transformer"):
        create_encoder("resnet18")


def test_load_from_empty_folder_says_what_to_do(tmp_path):
    with pytest.raises(EncoderError, match="examine pretrain"):
        Encoder.load(tmp_path)
