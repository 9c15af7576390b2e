"""On a CUDA machine: batched device augmentation, fused AdamW and resume. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from examine.datasets import medical_tiles
from examine.encoder import Encoder, EncoderConfig
from examine.mae import PretrainConfig, pretrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CFG = EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=8)


def test_cuda_pretraining_learns_saves_and_resumes(tmp_path):
    tiles = medical_tiles(128, size=48, seed=0)
    cfg = PretrainConfig(epochs=6, batch_size=32, base_lr=1e-3, warmup_epochs=1, compile=False)
    enc, losses = pretrain(tiles, tmp_path / "a", cfg, encoder_config=CFG, device="cuda", progress=False)
    assert len(losses) == 6 and all(np.isfinite(losses)) and min(losses[-2:]) < losses[0] * 0.9, losses
    assert Encoder.load(tmp_path / "a").version == enc.version

    first: list[float] = []

    def interrupt(epoch, loss):
        first.append(loss)
        if epoch == 4:
            raise KeyboardInterrupt  # after epoch 4's loss, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        pretrain(tiles, tmp_path / "b", cfg, encoder_config=CFG, device="cuda", progress=False, on_epoch=interrupt)
    seen: list[int] = []
    _, resumed = pretrain(
        tiles,
        tmp_path / "b",
        cfg,
        encoder_config=CFG,
        device="cuda",
        progress=False,
        on_epoch=lambda epoch, loss: seen.append(epoch),
    )
    assert seen == [4, 5, 6], seen  # it resumed after epoch 3's checkpoint instead of starting again
    report = f"fresh run {losses}, interrupted run {first}, resumed {resumed}"
    assert resumed[:3] == first[:3], report  # the checkpoint's history is kept
    # same seeds: the same trajectory up to GPU kernels' last bits
    np.testing.assert_allclose(first, losses[:4], rtol=0.05, err_msg=report)
    np.testing.assert_allclose(resumed, losses, rtol=0.05, err_msg=report)


def test_images_too_big_for_the_gpu_stay_in_pinned_memory():
    from examine.gpu_augment import ImageBank

    imgs = medical_tiles(8, size=48, seed=1)
    bank = ImageBank(imgs, torch.device("cuda"), 32, gpu_fraction=0.0)
    assert not bank.on_device and bank.data.is_pinned()
    x = bank.augment(torch.arange(8), (0.35, 1.0), torch.Generator(device="cuda").manual_seed(0))
    assert x.is_cuda and x.shape == (8, 3, 32, 32) and torch.isfinite(x).all()
