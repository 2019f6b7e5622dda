"""Crop-and-resize of many views from many decoded images at once, on any torch device,
equal to Pillow's bilinear resize bit for bit.

mmpretrain's ``RandomResizedCrop(backend='pillow')`` cuts a box out of the decoded image and
resizes it with ``PIL.Image.resize(size, BILINEAR)``: a separable, antialiased triangle
filter (its support grows with the downscale), applied along the width first, the result
stored as uint8, then along the height.  Pillow computes each output pixel's weights in
double precision, turns them into 22-bit fixed point, sums ``pixel x weight`` in integers,
rounds by ``+ 2^21 >> 22`` and clips to 0..255 (``src/libImaging/Resample.c``).

Here the weights are computed on the host with the same double-precision steps (NumPy,
cached per size pair) and laid into dense ``(out, in)`` matrices on the device; the two passes
are batched float64 matmuls.  Every partial sum is an integer below 2^31, exact in float64
whatever the summation order, so the result equals Pillow's on any device.  The float64
matmuls run on the GPU's FP64 units (tensor cores on H100 / H200).

Views are grouped by size before they are padded into one batch, so that a few large images
do not inflate the work of all the others (:func:`size_groups`).  A group holds its padded
crops as float64 with their gather index, about 32 bytes per pixel of the device's memory
while it is resized: about 0.2 GB for 32 views of 500 x 375, 2.2 GB for one crop of ImageNet's
largest image (about 10,000 x 7,000).
"""
import functools
from typing import List, Sequence, Tuple

import numpy as np
import torch

PRECISION_BITS = 22  # Pillow's 32 - 8 - 2
# views of one batch are resized in at most this many padded groups (fewer kernel launches
# against less padding)
MAX_GROUPS = 4


@functools.lru_cache(maxsize=65536)
def bilinear_weights(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pillow's bilinear resampling of ``in_size`` pixels to ``out_size``
    (``precompute_coeffs`` + ``normalize_coeffs_8bpc``): the first input pixel of each output
    pixel ``(out_size,)`` int64 and the fixed-point weights ``(out_size, ksize)`` int64 of
    the pixels from there on (zero past the last one used)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f'cannot resize {in_size} pixels to {out_size}')
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear filter's support, 1, times the downscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale  # (out,)
    # C's (int) cast truncates toward zero, as astype does
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)  # (K,)
    x = ((taps[None, :] + xmin[:, None]) - center[:, None] + 0.5) * (1.0 / filterscale)
    weights = np.where(taps[None, :] < xmax[:, None], np.maximum(1.0 - np.abs(x), 0.0), 0.0)
    total = np.cumsum(weights, axis=1)[:, -1:]  # summed in order, as the C loop does
    weights = np.where(total != 0, weights / np.where(total != 0, total, 1.0), weights)
    fixed = np.where(weights < 0, -0.5 + weights * (1 << PRECISION_BITS),
                     0.5 + weights * (1 << PRECISION_BITS)).astype(np.int64)  # (out, K)
    xmin.setflags(write=False)
    fixed.setflags(write=False)
    return xmin, fixed


def size_groups(heights: np.ndarray, widths: np.ndarray,
                max_groups: int = MAX_GROUPS) -> List[np.ndarray]:
    """Views (by index) in at most ``max_groups`` groups, each padded to its largest height
    and width: the views sorted by area, cut where the padded area of all groups together is
    least (dynamic programming over the cut points, vectorised: ~1 ms for 128 views)."""
    if len(heights) == 0:
        return []
    order = np.argsort(-(heights.astype(np.int64) * widths), kind='stable')
    h, w = heights[order].astype(np.int64), widths[order].astype(np.int64)
    n = len(order)
    # padded[i, j]: area of views i..j (sorted) padded to one size, for j >= i
    upper = np.triu(np.ones((n, n), dtype=bool))
    max_h = np.maximum.accumulate(np.where(upper, h[None, :], 0), axis=1)
    max_w = np.maximum.accumulate(np.where(upper, w[None, :], 0), axis=1)
    count = np.arange(n)[None, :] - np.arange(n)[:, None] + 1
    padded = np.where(upper, count * max_h * max_w, np.iinfo(np.int64).max // 4)
    best, cut = padded[0].copy(), [np.zeros(n, dtype=np.int64)]  # best[j]: views 0..j
    for _ in range(1, max_groups):
        # a last group i..j after the best split of 0..i-1
        total = np.concatenate([[np.iinfo(np.int64).max // 4], best[:-1]])[:, None] + padded
        start = np.argmin(total, axis=0)
        better = total[start, np.arange(n)] < best
        best = np.where(better, total[start, np.arange(n)], best)
        cut.append(np.where(better, start, -1))
    groups, j = [], n - 1
    for level in range(max_groups - 1, -1, -1):
        if j < 0:
            break
        start = cut[level][j]
        if start < 0:
            continue
        groups.append(order[start:j + 1])
        j = start - 1
    return groups[::-1]


def _dense_weights(sizes: Sequence[int], out_size: int) -> np.ndarray:
    """Compact weights of each view's resize, ``(views, out_size, 1 + K)``: the first input
    pixel, then the K fixed-point weights (K the largest of the group)."""
    compact = [bilinear_weights(int(s), out_size) for s in sizes]
    taps = max(w.shape[1] for _, w in compact)
    out = np.zeros((len(sizes), out_size, 1 + taps))
    for v, (first, weights) in enumerate(compact):
        out[v, :, 0] = first
        out[v, :, 1:1 + weights.shape[1]] = weights
    return out


def _weight_matrices(compact: torch.Tensor, padded: int) -> torch.Tensor:
    """Dense ``(views, out, padded)`` float64 weights from the compact form: each row's
    weights laid at its first input pixel onwards.  Taps past the padded width carry weight
    zero (added to the last column, which changes nothing)."""
    views, out_size, k1 = compact.shape
    first = compact[..., :1].long()  # (V, out, 1)
    columns = (first + torch.arange(k1 - 1, device=compact.device)).clamp_(max=padded - 1)
    dense = torch.zeros(views, out_size, padded, dtype=torch.float64, device=compact.device)
    return dense.scatter_add_(2, columns, compact[..., 1:])  # (V, out, padded)


def _round_clip(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8(ss)`` of ``ss = 2^21 + sum``: ``>> 22``, clipped to 0..255."""
    return sums.add_(1 << (PRECISION_BITS - 1)).div_(1 << PRECISION_BITS).floor_().clamp_(0, 255)


def vertical_first(heights: np.ndarray, widths: np.ndarray, out_h: int,
                   out_w: int) -> np.ndarray:
    """Whether Pillow (13 and later) resamples along the height first: when the height
    shrinks by more than twice as many pixels as the width (``ImagingResampleInner``).
    The order decides how the intermediate image is rounded, so it must be Pillow's."""
    shrink_h = heights - out_h
    return (shrink_h > 0) & (shrink_h > 2 * (widths - out_w))


@torch.no_grad()
def resized_crops(sources: torch.Tensor, offsets: np.ndarray, shapes: np.ndarray,
                  boxes: np.ndarray, out_size: Tuple[int, int]) -> torch.Tensor:
    """Cut ``boxes`` out of decoded images and resize each to ``out_size`` as
    ``mmcv.imresize(mmcv.imcrop(img, box), size, 'bilinear', backend='pillow')`` does.

    Args:
        sources (Tensor): uint8, the decoded ``(H, W, 3)`` images flattened and concatenated,
            on the device that does the work.
        offsets (ndarray): ``(V,)`` where each view's image starts in ``sources``.
        shapes (ndarray): ``(V, 2)`` each view's image ``(H, W)``.
        boxes (ndarray): ``(V, 4)`` the crop in pixel edges, ``x1, y1, x2, y2``
            (``x2 = x1 + width``), inside the image.
        out_size (tuple): ``(height, width)`` of every view.

    Returns:
        Tensor: float32 ``(V, 3, out_h, out_w)`` of integer values 0..255, channels in the
        sources' order.
    """
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
    if not len(boxes) == len(shapes) == len(offsets):
        raise ValueError(f'{len(boxes)} boxes, {len(shapes)} shapes and {len(offsets)} '
                         'offsets: one of each per view')
    x1, y1, x2, y2 = boxes.T
    heights, widths = y2 - y1, x2 - x1
    outside = (heights < 1) | (widths < 1) | (x1 < 0) | (y1 < 0) | (x2 > shapes[:, 1]) | (
        y2 > shapes[:, 0])
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        raise ValueError(f'crop box {boxes[bad].tolist()} of view {bad} is empty or leaves '
                         f'its {shapes[bad, 0]} x {shapes[bad, 1]} image')
    out_h, out_w = out_size
    device = sources.device
    pixels = sources.view(-1, 3)  # (P, 3): one row per pixel
    out = torch.empty(len(boxes), 3, out_h, out_w, dtype=torch.float32, device=device)
    height_first = vertical_first(heights, widths, out_h, out_w)
    for first in (False, True):
        chosen = np.flatnonzero(height_first == first)
        for group in (chosen[g] for g in size_groups(heights[chosen], widths[chosen])):
            out[torch.from_numpy(group).to(device)] = _resize_group(
                pixels, offsets[group] // 3, shapes[group, 1], boxes[group], (out_h, out_w),
                first)
    return out


def _resize_group(pixels: torch.Tensor, starts: np.ndarray, image_widths: np.ndarray,
                  boxes: np.ndarray, out_size: Tuple[int, int],
                  height_first: bool) -> torch.Tensor:
    """:func:`resized_crops` of views padded to one size: ``(G, 3, out_h, out_w)``."""
    out_h, out_w = out_size
    x1, y1, x2, y2 = boxes.T
    heights, widths = y2 - y1, x2 - x1
    hc, wc, count = int(heights.max()), int(widths.max()), len(boxes)
    # host side: each padded crop pixel's index in ``pixels`` (rows and columns past the crop
    # repeat its last one; their weights are zero), and the compact weights
    rows = np.minimum(np.arange(hc)[None, :], heights[:, None] - 1)  # (G, hc)
    cols = np.minimum(np.arange(wc)[None, :], widths[:, None] - 1)  # (G, wc)
    host = [starts[:, None] + (y1[:, None] + rows) * image_widths[:, None],
            x1[:, None] + cols, _dense_weights(widths, out_w), _dense_weights(heights, out_h)]
    flat = torch.from_numpy(np.concatenate([a.reshape(-1).astype(np.float64) for a in host]))
    if pixels.device.type == 'cuda':
        flat = flat.pin_memory()
    pieces = torch.split(flat.to(pixels.device, non_blocking=True), [a.size for a in host])
    row_start, col, along_w, along_h = (p.view(a.shape) for p, a in zip(pieces, host))
    crops = pixels[row_start.long()[:, :, None] + col.long()[:, None, :]]  # (G, hc, wc, 3)
    image = crops.permute(0, 3, 1, 2).to(torch.float64, memory_format=torch.contiguous_format)
    along_w = _weight_matrices(along_w, wc).transpose(1, 2)  # (G, wc, out_w)
    along_h = _weight_matrices(along_h, hc).unsqueeze(1)  # (G, 1, out_h, hc)
    # each pass's result is stored as integers 0..255, as Pillow's intermediate image
    if height_first:
        image = _round_clip(torch.matmul(along_h, image))  # (G, 3, out_h, wc)
        image = _round_clip(torch.matmul(image, along_w.unsqueeze(1)))
    else:
        image = _round_clip(torch.matmul(image, along_w.unsqueeze(1)))  # (G, 3, hc, out_w)
        image = _round_clip(torch.matmul(along_h, image))
    return image.to(torch.float32)  # (G, 3, out_h, out_w)
