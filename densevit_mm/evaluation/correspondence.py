"""Where each patch of one view truly lies in the other view, and how often the feature
argmax finds it.  DenseCL's correspondence is unsupervised; this is a diagnostic only."""
from typing import Tuple

import torch


def patch_centers_in_source(geometry: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """Source-image coordinates of every patch centre of a view.

    Args:
        geometry (Tensor): ``(B, 7)`` rows ``x1, y1, x2, y2, flipped, height, width`` from
            ``MultiViewWithGeometry``.
        grid (tuple): ``(Gh, Gw)`` patches of the view.

    Returns:
        Tensor: ``(B, Gh * Gw, 2)`` ``(x, y)`` in source pixels, row-major over the grid.
    """
    gh, gw = grid
    x1, y1, x2, y2, flipped = geometry[:, :5].unbind(dim=1)  # (B,) each
    ys = (torch.arange(gh, dtype=geometry.dtype, device=geometry.device) + 0.5) / gh
    xs = (torch.arange(gw, dtype=geometry.dtype, device=geometry.device) + 0.5) / gw
    u = xs.repeat(gh)[None]  # (1, N): fraction across the view, row-major
    v = ys.repeat_interleave(gw)[None]  # (1, N)
    u = torch.where(flipped[:, None] > 0.5, 1 - u, u)  # a flip mirrors the crop
    x = x1[:, None] + u * (x2 - x1)[:, None]  # (B, N)
    y = y1[:, None] + v * (y2 - y1)[:, None]
    return torch.stack([x, y], dim=2)


def true_correspondence(geom_q: torch.Tensor, geom_k: torch.Tensor,
                        grid: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each patch of view q, the view-k patch containing the same source point.

    Returns:
        tuple: long ``(B, N)`` grid ``(row, col)`` packed as ``row * Gw + col`` and bool
        ``(B, N)``, False where the point falls outside view k.
    """
    gh, gw = grid
    points = patch_centers_in_source(geom_q, grid)  # (B, N, 2)
    x1, y1, x2, y2, flipped = geom_k[:, :5].unbind(dim=1)
    u = (points[..., 0] - x1[:, None]) / (x2 - x1)[:, None]  # (B, N) fraction across view k
    v = (points[..., 1] - y1[:, None]) / (y2 - y1)[:, None]
    u = torch.where(flipped[:, None] > 0.5, 1 - u, u)
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    col = (u * gw).floor().clamp(0, gw - 1).long()
    row = (v * gh).floor().clamp(0, gh - 1).long()
    return row * gw + col, inside


def correspondence_accuracy(predicted: torch.Tensor, geom_q: torch.Tensor,
                            geom_k: torch.Tensor, grid: Tuple[int, int],
                            tolerance: int = 1) -> torch.Tensor:
    """Fraction of argmax matches within ``tolerance`` patches (Chebyshev) of the true one.

    Args:
        predicted (Tensor): long ``(B, N)`` matched view-k index per view-q patch.
        geom_q, geom_k (Tensor): ``(B, 7)`` view geometry.
        grid (tuple): ``(Gh, Gw)``.

    Returns:
        Tensor: scalar in [0, 1] over the patches whose true match exists (NaN if none).
    """
    gw = grid[1]
    truth, inside = true_correspondence(geom_q, geom_k, grid)
    hit = ((predicted // gw - truth // gw).abs() <= tolerance) & \
        ((predicted % gw - truth % gw).abs() <= tolerance)
    return (hit & inside).sum() / inside.sum()


def hub_share(match: torch.Tensor, num_keys: int) -> torch.Tensor:
    """How much the matching collapses onto "hub" key patches: per image, the share of the
    ``N`` query patches matched to the single most-chosen key patch, averaged over images
    (``1 / num_keys`` at best spread, 1 when all queries pick one key).

    Args:
        match (Tensor): long ``(B, N)`` matched key index per query patch.
        num_keys (int): Key patches per image.
    """
    counts = torch.zeros(match.shape[0], num_keys, device=match.device)
    counts.scatter_add_(1, match, torch.ones_like(match, dtype=counts.dtype))  # (B, K)
    return (counts.max(dim=1).values / match.shape[1]).mean()
