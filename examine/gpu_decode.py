"""Batched JPEG decoding with nvJPEG and the embedder's resize + normalisation, on the device.

Only JPEGs that nvJPEG decodes the way :func:`examine.images.load_image` would go
to the GPU: baseline/extended Huffman, 8-bit, greyscale or YCbCr, no EXIF block
(orientation) and no Adobe colour transform (CMYK, RGB JPEG). Everything else —
other formats, 16-bit, DICOM, progressive JPEG, and any JPEG nvJPEG refuses —
is decoded per item on the CPU (:mod:`examine.decode_pool`).

:func:`square_batch` is :func:`examine.encoder.to_square_tensor` for a batch of
same-sized uint8 images on any device: short side resized (bilinear, antialiased),
centre crop, then ImageNet normalisation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import cast

import torch

from examine.encoder import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["jpeg_size", "nvjpeg_decode", "square_batch", "fit_within", "MAX_GPU_PIXELS"]

# torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; they still are its batched nvJPEG
# entry point, so that one notice (raised at every call) is filtered once here, not shown to every user
warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)

#: Larger JPEGs are decoded on the CPU (memory of a full batch of them on the GPU).
MAX_GPU_PIXELS = 4096 * 4096
_SOF_OK = (0xC0, 0xC1)  # baseline and extended sequential Huffman
_SOF_OTHER = frozenset(range(0xC2, 0xD0)) - {0xC4, 0xC8, 0xCC}  # progressive, lossless, arithmetic


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) when nvJPEG can decode ``data`` exactly like Pillow; None otherwise."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8 or data[2] != 0xFF:
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        seg = bytes(data[i + 4 : i + 2 + length])
        if marker == 0xE1 and seg.startswith(b"Exif"):
            return None  # may carry an orientation: Pillow applies it
        if marker == 0xEE and seg.startswith(b"Adobe"):
            return None  # CMYK / untransformed RGB
        if marker in _SOF_OK:
            if len(seg) < 6:
                return None
            precision, h, w, comps = seg[0], (seg[1] << 8) | seg[2], (seg[3] << 8) | seg[4], seg[5]
            if precision != 8 or comps not in (1, 3) or h == 0 or w == 0 or h * w > MAX_GPU_PIXELS:
                return None
            return h, w
        if marker in _SOF_OTHER or marker == 0xDA:
            return None
        i += 2 + length
    return None


def nvjpeg_decode(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """Decode JPEG bytes on the GPU to (3, H, W) uint8 tensors; None where nvJPEG refuses an item.

    The whole list goes to nvJPEG in one batched call; if that fails, each item is
    tried alone so one bad file costs only itself.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    inputs = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    try:
        return list(decode_jpeg(inputs, mode=ImageReadMode.RGB, device=device))
    except Exception:
        pass
    result: list[torch.Tensor | None] = []
    for x in inputs:
        try:
            result.append(decode_jpeg(x, mode=ImageReadMode.RGB, device=device))
        except Exception:
            result.append(None)
    return result


_MEAN_STD: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std on ``device``, made once (a copy to the GPU would wait for it)."""
    if device not in _MEAN_STD:
        _MEAN_STD[device] = (
            torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1),
        )
    return _MEAN_STD[device]


def square_batch(images: torch.Tensor, size: int, *, normalise: bool = True) -> torch.Tensor:
    """(B, 3, H, W) uint8 → (B, 3, size, size) float32: resize, centre crop, [0, 1], normalise.

    The same arithmetic as :func:`examine.encoder.to_square_tensor` (then the
    embedder's ``(x - mean) / std``), batched, on the tensor's own device.
    """
    import torch.nn.functional as F

    t = images.float().div_(255.0)
    h, w = t.shape[2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        t = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    t = t[:, :, top : top + size, left : left + size].clamp_(0.0, 1.0)
    if normalise:
        mean, std = _mean_std(t.device)
        t = (t - mean) / std
    return t.contiguous()


def square_images(images: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Differently sized (3, H, W) uint8 images → one normalised (B, 3, size, size) batch, in order."""
    if not images:
        raise ValueError("no images")
    device = images[0].device
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(cast(tuple[int, int], tuple(im.shape[1:])), []).append(i)
    for idx in groups.values():
        batch = torch.stack([images[i] for i in idx]) if len(idx) > 1 else images[idx[0]][None]
        res = square_batch(batch, size)
        if len(idx) == len(images):
            return res
        out[torch.tensor(idx, device=device)] = res
    return out


def fit_within(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """A (3, H, W) uint8 image shrunk (bilinear, antialiased) so that its longer side is at most ``max_side``,
    on its own device; returned as is when it already fits."""
    import torch.nn.functional as F

    h, w = image.shape[1:]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    t = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return t[0].round_().clamp_(0, 255).to(torch.uint8)
