"""The MoCo v2 / DenseCL photometric augmentation, batched on any torch device.

Reproduces, on a batch with per-image parameters, what mmpretrain's per-image transforms do
to a uint8 BGR image: ``ColorJitter`` (mmcv's Pillow backend: ``ImageEnhance`` brightness,
contrast and colour, and the hue shift through Pillow's 8-bit HSV), mmcv's
``RandomGrayscale`` and mmpretrain's ``GaussianBlur`` (Pillow's three-pass extended box
blur).  The arithmetic follows Pillow's and NumPy's -- float32 blends truncated to integers,
fixed-point luma, Pillow's own 8-bit HSV tables, integer box sums -- so the result equals the
per-image op's bit for bit (on a CPU, tested in
``tests/test_datasets/test_batched_photometric.py``; a ``gpu`` test checks CUDA).

Hand-written rather than torchvision's v2 tensor ops or kornia: torchvision's take one
factor per call (a loop over the batch), and both compute hue in float HSV and blur with a
sampled Gaussian kernel.  On 224-pixel photograph-like images that differs from the
per-image ops by up to 12 grey levels for the hue shift and 43 for the blur (torchvision
0.29), so the augmentation, and a recipe tuned with it, would change with the option.

Images here are float tensors ``(N, 3, H, W)`` holding integer values 0..255, channels in
mmcv's BGR order.  :class:`DeferredPhotometric` draws the parameters in the data workers;
:func:`apply_photometric` applies a batch of them.
"""
import functools
from typing import Dict, Tuple, Union

import numpy as np
import torch
from PIL import Image

# Columns of the parameter row DeferredPhotometric writes for each view (float64; NaN where a
# factor is not configured).
JITTER = 0  # 1: the colour jitter is applied
ORDER = slice(1, 5)  # its random order of brightness (0), contrast (1), saturation (2), hue (3)
FACTORS = slice(5, 9)  # brightness, contrast, saturation factors; hue shift in 8-bit steps
GRAY = 9  # 1: converted to grey
GRAY_WEIGHTS = slice(10, 13)  # normalised channel weights (in the image's channel order)
BLUR = 13  # 1: blurred
RADIUS = 14  # blur radius in pixels
NUM_COLUMNS = 15


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's ``Image.blend(degenerate, image, factor)`` on uint8 bands: float32,
    clipped to 0..255, truncated."""
    factor = factor.to(torch.float32).view(-1, 1, 1, 1)
    return (degenerate + factor * (image - degenerate)).clamp_(0, 255).trunc_()


def _luma(bgr: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L conversion, ``(19595 R + 38470 G + 7471 B + 2^15) >> 16``: (N, 1,
    H, W).  Exact in float32: every partial sum stays below 2^24."""
    b, g, r = bgr[:, 0:1], bgr[:, 1:2], bgr[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def adjust_brightness(bgr: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(torch.zeros_like(bgr), bgr, factor)


def adjust_contrast(bgr: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean luma, rounded to an integer as ``ImageEnhance.Contrast``
    rounds it."""
    luma = _luma(bgr).double()
    mean = torch.floor(luma.sum(dim=(1, 2, 3)) / luma[0].numel() + 0.5)  # (N,)
    return _blend(mean.to(bgr.dtype).view(-1, 1, 1, 1).expand_as(bgr), bgr, factor)


def adjust_saturation(bgr: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(_luma(bgr).expand_as(bgr), bgr, factor)


_HSV_TABLES: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}


def hsv_tables(device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pillow's RGB -> HSV and HSV -> RGB for every 8-bit triple ``(x, y, z)``, indexed by
    ``(x << 16) | (y << 8) | z``: ``H << 8 | S`` (int32, V is the maximum of R, G, B) and
    ``R << 16 | G << 8 | B`` (int32).  Converted by Pillow itself -- one 4096 x 4096 picture
    of all triples, about a second -- once per process and device (128 MB): exact by
    construction, and two table look-ups per pixel on the device instead of Pillow's float
    and double arithmetic."""
    key = str(device)
    if key not in _HSV_TABLES:
        every = np.arange(1 << 24, dtype=np.int32)
        triples = np.stack([every >> 16, (every >> 8) & 255, every & 255], axis=-1)
        triples = triples.astype(np.uint8).reshape(4096, 4096, 3)
        hsv = np.asarray(Image.fromarray(triples).convert('HSV')).astype(np.int32)
        rgb = np.asarray(Image.merge('HSV', [Image.fromarray(np.ascontiguousarray(
            triples[..., c])) for c in range(3)]).convert('RGB')).astype(np.int32)
        to_hs = (hsv[..., 0] << 8 | hsv[..., 1]).reshape(-1)
        to_rgb = (rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]).reshape(-1)
        _HSV_TABLES[key] = (torch.from_numpy(to_hs).to(device),
                            torch.from_numpy(to_rgb).to(device))
    return _HSV_TABLES[key]


def adjust_hue(bgr: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> HSV, ``H + shift`` modulo 256, HSV -> RGB (``shift``: integer steps
    of 1/256 turn, as ``int(hue_factor * 255)``).  Even a zero shift changes the image: the
    round trip through 8-bit HSV is lossy, as in the per-image op."""
    to_hs, to_rgb = hsv_tables(bgr.device)
    b, g, r = (bgr[:, c].long() for c in range(3))  # (N, H, W)
    hs = torch.take(to_hs, (r << 16) | (g << 8) | b).long()
    h = ((hs >> 8) + shift.long().view(-1, 1, 1)) & 255
    value = torch.maximum(r, torch.maximum(g, b))
    rgb = torch.take(to_rgb, (h << 16) | ((hs & 255) << 8) | value)
    return torch.stack([rgb & 255, (rgb >> 8) & 255, rgb >> 16], dim=1).to(bgr.dtype)


def grayscale(image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mmcv's ``RandomGrayscale(keep_channels=True)``: the weighted channel sum in float64,
    truncated to uint8 (``astype``), copied to every channel.  ``weights``: (N, 3)
    normalised, in the image's channel order."""
    w = weights.to(torch.float64).view(-1, 3, 1, 1)
    x = image.to(torch.float64) * w
    grey = torch.trunc((x[:, 0] + x[:, 1]) + x[:, 2])
    return grey.to(image.dtype).unsqueeze(1).expand_as(image).contiguous()


def box_blur_weights(radius: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's box for ``GaussianBlur(radius)`` with three passes (``_gaussian_blur_radius``
    and ``ImagingHorizontalBoxBlur``, in C's float32 / double mix): integer box radius, the
    fixed-point weight of each pixel inside the box and of the two pixels just outside it
    (weights sum to 2^24)."""
    f32, f64 = np.float32, np.float64
    radius = np.asarray(radius, dtype=f32)
    sigma2 = (radius * radius / f32(3)).astype(f32)
    box_length = np.sqrt(12.0 * sigma2.astype(f64) + 1.0).astype(f32)
    whole = np.floor((box_length.astype(f64) - 1.0) / 2.0).astype(f32)
    frac = ((f32(2) * whole + f32(1)) * (whole * (whole + f32(1)) - f32(3) * sigma2)).astype(f32)
    frac = (frac / (f32(6) * (sigma2 - (whole + f32(1)) * (whole + f32(1))))).astype(f32)
    box = (whole + frac).astype(f32)
    inner = (f32(1 << 24) / (box * f32(2) + f32(1))).astype(f32).astype(np.uint32)
    r = box.astype(np.int64)
    outer = ((np.int64(1 << 24) - (2 * r + 1) * inner.astype(np.int64)) // 2)
    return r, inner.astype(np.int64), outer


def _box_blur_pass(x: torch.Tensor, r: int, inner: torch.Tensor,
                   outer: torch.Tensor) -> torch.Tensor:
    """One pass of Pillow's horizontal box blur along the last dimension of ``x`` (float32
    ``(N, C, H, W)`` of 0..255 integers), edge pixels repeated: the window sums are exact in
    float32, the fixed-point weighting (``inner``, ``outer``: ``(N,)`` float64) and its
    rounding ``>> 24`` are done in float64, where the sums below 2^33 are exact too."""
    width = x.shape[-1]
    padded = torch.cat([x[..., :1].expand(*x.shape[:-1], r + 1), x,
                        x[..., -1:].expand(*x.shape[:-1], r + 1)], dim=-1)
    inside = padded[..., 1:1 + width].clone()
    for k in range(2, 2 * r + 2):
        inside += padded[..., k:k + width]
    outside = padded[..., :width] + padded[..., 2 * r + 2:]
    total = inside.double().mul_(inner.view(-1, 1, 1, 1))
    total.add_(outside.double().mul_(outer.view(-1, 1, 1, 1))).add_(1 << 23)
    return total.div_(1 << 24).floor_().float()


def _box_blur(x: torch.Tensor, inner: torch.Tensor, outer: torch.Tensor, box: int,
              passes: int = 3) -> torch.Tensor:
    """``passes`` box blurs along the width, then along the height, each rounded to integers
    as Pillow stores them."""
    for _ in range(passes):
        x = _box_blur_pass(x, box, inner, outer)
    x = x.transpose(-1, -2)
    for _ in range(passes):
        x = _box_blur_pass(x, box, inner, outer)
    return x.transpose(-1, -2)


def _blur_steps(rows: np.ndarray, radius: np.ndarray) -> list:
    """The steps (see :func:`_run`) blurring images ``rows`` with ``radius`` as
    ``PIL.ImageFilter.GaussianBlur``: one per integer box radius (0 or 1 up to radius 2)."""
    r, inner, outer = box_blur_weights(radius)
    return [(functools.partial(_box_blur, box=int(box)), rows[r == box],
             [inner[r == box], outer[r == box]]) for box in np.unique(r)]


def _run(out: torch.Tensor, steps: list) -> torch.Tensor:
    """Apply ``(op, rows, args)`` steps in order, in place: ``out[rows] = op(out[rows],
    *args)`` with host arrays ``rows`` and ``args``.  All of them reach the device in one
    copy from pinned memory, so the host never waits for the device here."""
    steps = [step for step in steps if len(step[1])]
    if not steps:
        return out
    host = [np.asarray(a, dtype=np.float64) for _, rows, args in steps for a in (rows, *args)]
    flat = torch.from_numpy(np.concatenate([a.reshape(-1) for a in host]))
    if out.device.type == 'cuda':
        flat = flat.pin_memory()
    flat = flat.to(out.device, non_blocking=True)
    pieces = iter([piece.view(a.shape) for piece, a in
                   zip(torch.split(flat, [a.size for a in host]), host)])
    for op, _, args in steps:
        rows = next(pieces).long()
        out.index_copy_(0, rows, op(out.index_select(0, rows), *[next(pieces) for _ in args]))
    return out


def gaussian_blur(image: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """``PIL.ImageFilter.GaussianBlur(radius)`` per image (``radius``: ``(N,)``)."""
    out = image.to(torch.float32).clone()
    _run(out, _blur_steps(np.arange(len(image)), radius.detach().cpu().numpy()))
    return out.to(image.dtype)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


@torch.no_grad()
def apply_photometric(images: torch.Tensor,
                      params: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """Apply DeferredPhotometric's drawn parameters to a batch of one view.

    Which image gets which op is decided on the host, from ``params``; the indices and
    arguments travel to the device in one asynchronous copy.

    Args:
        images (Tensor): ``(N, 3, H, W)`` integer values 0..255 (any dtype), BGR.
        params (ndarray | Tensor): ``(N, NUM_COLUMNS)`` float64 rows, see the column
            constants.

    Returns:
        Tensor: float32 ``(N, 3, H, W)`` of integer values 0..255, BGR.
    """
    if isinstance(params, torch.Tensor):
        params = params.detach().cpu().numpy()
    params = np.asarray(params, dtype=np.float64)
    if params.shape != (images.shape[0], NUM_COLUMNS):
        raise ValueError(f'photometric parameters must be ({images.shape[0]}, {NUM_COLUMNS}) '
                         f'rows, one per image, got {params.shape}')
    steps = []
    jitter = params[:, JITTER] == 1
    for position in range(4):
        for op_index, op in enumerate(_JITTER_OPS):
            factor = params[:, FACTORS.start + op_index]
            chosen = jitter & (params[:, ORDER.start + position] == op_index) & ~np.isnan(factor)
            steps.append((op, np.flatnonzero(chosen), [factor[chosen]]))
    rows = np.flatnonzero(params[:, GRAY] == 1)
    steps.append((grayscale, rows, [params[rows, GRAY_WEIGHTS]]))
    rows = np.flatnonzero((params[:, BLUR] == 1) & (params[:, RADIUS] > 0))
    steps += _blur_steps(rows, params[rows, RADIUS])
    with torch.autocast(images.device.type, enabled=False):
        return _run(images.to(torch.float32), steps)
