"""MAE training data on the device: decoded images as one uint8 tensor, augmented in batches.

:class:`ImageBank` holds the images as a (N, 3, H, W) uint8 tensor — on the GPU
when it fits in a quarter of the free memory, else in pinned host memory — and
:meth:`ImageBank.augment` makes a normalised float batch in a handful of kernels:
one affine ``grid_sample`` does the random resized crop (torchvision's scale and
aspect-ratio ranges), the horizontal/vertical flips and the 90° rotations (the 8
symmetries of the square, uniformly: tissue and cells have no orientation);
then mild brightness/contrast jitter (stain and exposure vary; no hue shifts,
which would change stain semantics) and ImageNet normalisation. Every random
number comes from the caller's generator, so a seeded epoch is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from examine.encoder import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ImageBank"]

_RATIO = (3 / 4, 4 / 3)
_JITTER = 0.15  # brightness and contrast factors in [0.85, 1.15], as the per-image pipeline


def _shrink(img: np.ndarray, max_side: int) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(img)
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(im)


class ImageBank:
    """RGB uint8 images of any sizes, padded into one (N, 3, H, W) tensor with their true sizes."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        device: torch.device,
        img_size: int,
        *,
        max_side: int | None = None,
        gpu_fraction: float = 0.25,
    ):
        if not images:
            raise ValueError("no images")
        max_side = max_side or 2 * img_size
        images = [im if max(im.shape[:2]) <= max_side else _shrink(im, max_side) for im in images]
        self.device = device
        self.img_size = img_size
        hs = [im.shape[0] for im in images]
        ws = [im.shape[1] for im in images]
        H, W = max(hs), max(ws)
        nbytes = len(images) * 3 * H * W
        on_gpu = device.type == "cuda" and nbytes <= gpu_fraction * torch.cuda.mem_get_info(device)[0]
        self.on_device = device.type != "cuda" or on_gpu
        if all(h == H and w == W for h, w in zip(hs, ws)):
            host = torch.from_numpy(np.stack(images))  # (N, H, W, 3)
        else:
            host = torch.zeros((len(images), H, W, 3), dtype=torch.uint8)
            for i, im in enumerate(images):
                host[i, : im.shape[0], : im.shape[1]] = torch.from_numpy(np.require(im, requirements=["C", "W"]))
        if on_gpu:
            self.data = host.to(device).permute(0, 3, 1, 2).contiguous()
        else:
            self.data = host.permute(0, 3, 1, 2).contiguous()
            if device.type == "cuda":
                self.data = self.data.pin_memory()
        self.sizes_host = torch.tensor(list(zip(hs, ws)), dtype=torch.float32)  # (N, 2): h, w
        self.sizes = self.sizes_host.to(device)
        self.canvas = (H, W)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def index_device(self) -> torch.device:
        """Where :meth:`augment` wants its indices (so that indexing never waits for the device)."""
        return self.data.device

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """The uint8 images ``idx`` (indices on :attr:`index_device`) on the device."""
        if self.on_device:
            return self.data[idx]
        return self.data[idx].pin_memory().to(self.device, non_blocking=True)

    def augment(self, idx: torch.Tensor, crop_scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
        """A normalised (B, 3, img_size, img_size) float32 batch of augmented views of images ``idx``.

        ``idx`` lives on :attr:`index_device` (the device when the images are there, else the CPU).
        """
        dev = self.device
        idx = idx.to(self.index_device)
        x = self.gather(idx).float().div_(255.0)
        b = x.shape[0]
        if self.on_device:
            size = self.sizes[idx]
        else:
            size = self.sizes_host[idx].pin_memory().to(dev, non_blocking=True)
        h_img, w_img = size[:, 0], size[:, 1]
        u = torch.rand(b, 8, device=dev, generator=generator)
        area = h_img * w_img * (crop_scale[0] + (crop_scale[1] - crop_scale[0]) * u[:, 0])
        log_r = math.log(_RATIO[0]) + (math.log(_RATIO[1]) - math.log(_RATIO[0])) * u[:, 1]
        ratio = torch.exp(log_r)
        cw = torch.sqrt(area * ratio).clamp(max=w_img).clamp(min=1.0)
        ch = torch.sqrt(area / ratio).clamp(max=h_img).clamp(min=1.0)
        x0 = (w_img - cw) * u[:, 2]
        y0 = (h_img - ch) * u[:, 3]
        # The 8 symmetries of the square: optional transpose (a 90° turn with a flip), then two sign flips.
        swap = u[:, 4] < 0.5
        sx = torch.where(u[:, 5] < 0.5, -1.0, 1.0)
        sy = torch.where(u[:, 6] < 0.5, -1.0, 1.0)
        H, W = self.canvas
        ax, ay = cw / W, ch / H
        theta = torch.zeros(b, 2, 3, device=dev)
        zero = torch.zeros_like(ax)
        theta[:, 0, 0] = torch.where(swap, zero, ax * sx)
        theta[:, 0, 1] = torch.where(swap, ax * sy, zero)
        theta[:, 1, 0] = torch.where(swap, ay * sx, zero)
        theta[:, 1, 1] = torch.where(swap, zero, ay * sy)
        theta[:, 0, 2] = (2 * x0 + cw) / W - 1
        theta[:, 1, 2] = (2 * y0 + ch) / H - 1
        s = self.img_size
        grid = F.affine_grid(theta, [b, 3, s, s], align_corners=False)
        # Sample only between the image's own pixel centres: never blend in the canvas padding.
        lo = torch.stack([1.0 / W - 1 + zero, 1.0 / H - 1 + zero], dim=1).view(b, 1, 1, 2)
        hi = torch.stack([(2 * w_img - 1) / W - 1, (2 * h_img - 1) / H - 1], dim=1).view(b, 1, 1, 2)
        grid = torch.maximum(torch.minimum(grid, hi), lo)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        jitter = 1.0 + _JITTER * (2 * torch.rand(b, 2, device=dev, generator=generator) - 1)
        out = (out * jitter[:, 0].view(b, 1, 1, 1)).clamp_(0.0, 1.0)
        grey = (0.299 * out[:, 0] + 0.587 * out[:, 1] + 0.114 * out[:, 2]).mean(dim=(1, 2)).view(b, 1, 1, 1)
        c = jitter[:, 1].view(b, 1, 1, 1)
        out = (c * out + (1 - c) * grey).clamp_(0.0, 1.0)
        return (out - self.mean) / self.std
