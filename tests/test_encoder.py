"""The ViT encoder: weights from local files only, versions, deterministic embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from examine.datasets import medical_tiles
from examine.embed import embed_arrays
from examine.encoder import Encoder, EncoderConfig, EncoderError, create_encoder

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


def test_save_load_round_trip(tmp_path, tiles):
    enc = create_encoder(CFG, seed=4)
    enc.save(tmp_path)
    back = Encoder.load(tmp_path)
    assert back.version == enc.version and back.config == enc.config
    np.testing.assert_array_equal(embed_arrays(tiles[:3], back, device="cpu"), embed_arrays(tiles[:3], enc, device="cpu"))


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


def test_pretrained_by_name_without_file_is_a_clear_error():
    with pytest.raises(EncoderError, match="nothing is downloaded.*examine pretrain"):
        create_encoder("vit_base_patch16_224.mae", pretrained=True)


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
