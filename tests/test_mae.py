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
    _, all_losses = pretrain(
        tiles[:64],
        tmp_path,
        PretrainConfig(epochs=3, batch_size=32, warmup_epochs=1),
        encoder_config=CFG,
        device="cpu",
        progress=False,
        on_epoch=lambda epoch, loss: seen.append(epoch),
    )
    assert seen == [3] and all_losses[:2] == first


def test_masking_keeps_a_quarter_of_patches():
    import torch

    from examine.encoder import create_encoder

    mae = MAE(create_encoder(CFG), mask_ratio=0.75)
    latent, mask, _ = mae.encode_visible(torch.zeros(2, 3, 32, 32))
    assert latent.shape[1] == 1 + 4 and mask.sum(dim=1).tolist() == [12.0, 12.0]


def test_too_few_images():
    with pytest.raises(ValueError, match="at least 2"):
        pretrain([np.zeros((8, 8, 3), np.uint8)], "/tmp/unused-mae", PretrainConfig(epochs=1))


def test_batched_augmentation_path_is_deterministic_and_resumes_exactly(tmp_path, tiles):
    cfg = PretrainConfig(epochs=3, batch_size=32, warmup_epochs=1, augment="batched")
    _, straight = pretrain(tiles[:64], tmp_path / "a", cfg, encoder_config=CFG, device="cpu", progress=False)
    _, again = pretrain(tiles[:64], tmp_path / "b", cfg, encoder_config=CFG, device="cpu", progress=False)
    assert straight == again and all(np.isfinite(straight))

    def interrupt(epoch, loss):
        if epoch == 2:
            raise KeyboardInterrupt  # after epoch 2's loss, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        pretrain(tiles[:64], tmp_path / "c", cfg, encoder_config=CFG, device="cpu", progress=False, on_epoch=interrupt)
    _, resumed = pretrain(tiles[:64], tmp_path / "c", cfg, encoder_config=CFG, device="cpu", progress=False)
    assert resumed == straight


def test_image_bank_augment_shapes_and_symmetries():
    import torch

    from examine.gpu_augment import ImageBank

    imgs = [np.full((40, 40, 3), 100, np.uint8), np.full((30, 46, 3), 200, np.uint8), np.zeros((20, 60, 3), np.uint8)]
    bank = ImageBank(imgs, torch.device("cpu"), 24)
    assert bank.canvas == (40, 48)  # the 60-px image was shrunk to 2 × 24
    out = bank.augment(torch.tensor([0, 1, 1, 0, 1]), (0.35, 1.0), torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 24, 24) and torch.isfinite(out).all()
    # flat images stay flat whatever the crop, flip or rotation (jitter scales them uniformly)
    assert (out.amax(dim=(2, 3)) - out.amin(dim=(2, 3))).abs().max() < 1e-4
    # a full-image crop of an asymmetric image is one of its 8 symmetries
    ramp = np.zeros((16, 16, 3), np.uint8)
    ramp[:, :, 0] = np.arange(16, dtype=np.uint8)[None, :] * 16
    ramp[:, :, 1] = np.arange(16, dtype=np.uint8)[:, None] * 8
    bank = ImageBank([ramp], torch.device("cpu"), 16)
    seen = set()

    def direction(c):  # (along x?, increasing?) of a ramp channel
        dx, dy = float(c[:, -1].mean() - c[:, 0].mean()), float(c[-1].mean() - c[0].mean())
        return (abs(dx) > abs(dy), (dx if abs(dx) > abs(dy) else dy) > 0)

    for s in range(60):
        x = bank.augment(torch.tensor([0]), (1.0, 1.0), torch.Generator().manual_seed(s))[0]
        (r_x, r_up), (g_x, g_up) = direction(x[0]), direction(x[1])
        assert r_x != g_x  # the two ramps stay perpendicular
        seen.add((r_x, r_up, g_up))
    assert len(seen) == 8  # all 8 symmetries of the square occur


def test_a_checkpoint_of_another_encoder_is_not_loaded(tmp_path, tiles):
    cfg = PretrainConfig(epochs=1, batch_size=32, warmup_epochs=1)
    pretrain(tiles[:64], tmp_path, cfg, encoder_config=CFG, device="cpu", progress=False)
    other = EncoderConfig("vit_tiny_patch16_224", img_size=32, patch_size=16)
    with pytest.warns(UserWarning, match="starting a new run"):
        _, losses = pretrain(tiles[:64], tmp_path, cfg, encoder_config=other, device="cpu", progress=False)
    assert len(losses) == 1


def test_stored_configs_compare_as_json():
    from examine.mae import _as_json

    # a tuple-valued config field (e.g. EncoderConfig.model_kwargs) reads back from JSON as a list
    assert _as_json({"model_kwargs": (("init_values", 0.1),)}) == {"model_kwargs": [["init_values", 0.1]]}


def test_the_recipe_sizes_epochs_and_batches_with_the_folder():
    from examine.mae import CPU_PRETRAIN, CPU_SAMPLES, auto_batch_size, default_pretrain_config, sized_config

    assert auto_batch_size(100, 128) == 33 and auto_batch_size(10, 128) == 16  # ≥ 3 steps per epoch, ≥ 16 a batch
    assert auto_batch_size(1_000, 128) == 128 and auto_batch_size(50_000, 256) == 256  # large folders: the recipe's
    small = sized_config(CPU_PRETRAIN, 100)
    assert (small.epochs, small.batch_size, small.base_lr) == (100, 33, CPU_PRETRAIN.base_lr)
    big = sized_config(CPU_PRETRAIN, 6_000)
    assert (big.epochs, big.batch_size) == (CPU_SAMPLES // 6_000, CPU_PRETRAIN.batch_size)
    assert default_pretrain_config("cpu", n_images=100)[1] == small
