"""MAE pretraining on real tiles: the loss falls, checkpoints resume, the encoder is saved."""

from __future__ import annotations

import numpy as np
import pytest

from examine.datasets import medical_tiles
from examine.encoder import Encoder, EncoderConfig
from examine.mae import MAE, PretrainConfig, pretrain

CFG = EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8)


@pytest.fixture(scope="module")
def tiles():
    return medical_tiles(128, size=48, seed=0)


def test_loss_falls_and_encoder_is_saved(tmp_path, tiles):
    cfg = PretrainConfig(epochs=6, batch_size=32, base_lr=1e-3, warmup_epochs=1)
    enc, losses = pretrain(tiles, tmp_path, cfg, encoder_config=CFG, device="cpu", progress=False)
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert min(losses[-2:]) < losses[0] * 0.9, losses
    assert Encoder.load(tmp_path).version == enc.version
    assert (tmp_path / "mae_checkpoint.safetensors").is_file()


def test_resume_continues_from_the_checkpoint(tmp_path, tiles):
    cfg = PretrainConfig(epochs=2, batch_size=32, warmup_epochs=1)
    _, first = pretrain(tiles[:64], tmp_path, cfg, encoder_config=CFG, device="cpu", progress=False)
    seen = []
    _, all_losses = pretrain(tiles[:64], tmp_path, PretrainConfig(epochs=3, batch_size=32, warmup_epochs=1),
                             encoder_config=CFG, device="cpu", progress=False, on_epoch=lambda e, l: seen.append(e))
    assert seen == [3] and all_losses[:2] == first


def test_masking_keeps_a_quarter_of_patches():
    from examine.encoder import create_encoder
    import torch

    mae = MAE(create_encoder(CFG), mask_ratio=0.75)
    latent, mask, _ = mae.encode_visible(torch.zeros(2, 3, 32, 32))
    assert latent.shape[1] == 1 + 4 and mask.sum(dim=1).tolist() == [12.0, 12.0]


def test_too_few_images():
    with pytest.raises(ValueError, match="at least 2"):
        pretrain([np.zeros((8, 8, 3), np.uint8)], "/tmp/unused-mae", PretrainConfig(epochs=1))
