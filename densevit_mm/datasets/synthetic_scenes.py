"""Deterministic generated scenes: objects of four shapes, each shape with its own texture
pattern in random colours, on dull backgrounds that do not repeat themselves.

Each image depends only on ``(seed, index)``, so a folder of any size is reproducible and a
larger folder extends a smaller one.  Used for the quick-start job and the tests, where no
real data set is at hand.
"""
import os
import os.path as osp
from typing import Tuple

import numpy as np
from PIL import Image

SHAPES = ('disc', 'box', 'triangle', 'ring')


# Each class has its own texture pattern (in random colours, scale and orientation), as
# classes of real scenes have a typical appearance (grass, brick, sky) besides their outline.
PATTERNS = ('stripes', 'checkers', 'dots', 'rings')


def _texture(rng: np.random.Generator, size: int, pattern: str) -> np.ndarray:
    """``(size, size, 3)`` float object texture: two colours in ``pattern``, plus noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # (S, S) each
    angle = rng.uniform(0, np.pi)
    freq = 2 * np.pi / rng.uniform(5, 12)  # radians per pixel
    u = (xx * np.cos(angle) + yy * np.sin(angle)) * freq
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) * freq
    if pattern == 'stripes':
        mix = 0.5 + 0.5 * np.sin(u)
    elif pattern == 'checkers':
        mix = (np.sin(u) * np.sin(v) > 0).astype(np.float32)
    elif pattern == 'dots':
        mix = (np.cos(u) + np.cos(v) > 1.2).astype(np.float32)
    else:  # concentric rings around a random centre
        cy, cx = rng.uniform(0, size, size=2)
        mix = 0.5 + 0.5 * np.sin(np.hypot(yy - cy, xx - cx) * freq)
    base = rng.uniform(0, 255, size=3)
    other = rng.uniform(0, 255, size=3)
    tex = base * (1 - mix[..., None]) + other * mix[..., None]  # (S, S, 3)
    return tex + rng.normal(0, 8, size=tex.shape)


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """``(size, size)``: random values in [0, 1] on a ``cells x cells`` grid, upsampled
    bilinearly (corners aligned)."""
    grid = rng.uniform(0, 1, size=(cells + 1, cells + 1))
    pos = np.linspace(0, cells, size, dtype=np.float64)  # pixel centre -> grid coordinate
    lo = np.minimum(pos.astype(int), cells - 1)
    w = (pos - lo)[:, None]  # (S, 1)
    rows = grid[lo] * (1 - w) + grid[lo + 1] * w  # (S, cells+1)
    return rows[:, lo] * (1 - w.T) + rows[:, lo + 1] * w.T  # (S, S)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size, 3)`` float background that does not repeat itself.

    Coarse and fine random brightness fields in one dull tint plus a few small clutter blobs:
    as in photographs, a patch of background differs from the other patches of the same image
    (a periodic texture would let every background patch match every other one), while the
    colourful objects, not the background, are what sets one image apart from the others.
    """
    tint = rng.uniform(0.85, 1.15, size=3)
    field = 0.5 * _smooth_field(rng, size, 2) + 0.5 * _smooth_field(rng, size, 8)
    image = (70 + 120 * field)[..., None] * tint  # (S, S, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(3, 9))):
        cy, cx = rng.uniform(0, size, size=2)
        ry, rx = rng.uniform(0.02, 0.06, size=2) * size
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        image[blob] = rng.uniform(40, 220) * tint
    return image + rng.normal(0, 8, size=image.shape)


def _shape_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` mask of one object at a random place and scale."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = rng.uniform(0.08, 0.3) * size
    cy, cx = rng.uniform(radius * 0.5, size - radius * 0.5, size=2)
    if shape == 'disc':
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    if shape == 'ring':
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        return (d2 <= radius ** 2) & (d2 >= (0.55 * radius) ** 2)
    if shape == 'box':
        ry = radius * rng.uniform(0.5, 1.0)
        return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= radius)
    # triangle pointing up: inside when below both slanted edges and above the base
    top, base = cy - radius, cy + radius
    half_width = (yy - top) / (2 * radius) * radius
    return (yy >= top) & (yy <= base) & (np.abs(xx - cx) <= half_width)


def render_scene(seed: int, index: int, size: int = 96, max_objects: int = 5,
                 with_instances: bool = False) -> Tuple[np.ndarray, ...]:
    """Render scene ``index`` of the set ``seed``.

    Returns:
        tuple: ``image`` uint8 ``(size, size, 3)`` RGB and ``labels`` uint8 ``(size, size)``,
        0 for background and ``1 + SHAPES.index(shape)`` for each object; later objects
        occlude earlier ones.  With ``with_instances``, also ``instance_ids`` uint8
        ``(size, size)``: 0 for background, ``n`` for the n-th object drawn.
    """
    rng = np.random.default_rng([seed, index])
    image = _background(rng, size)
    labels = np.zeros((size, size), dtype=np.uint8)
    instance_ids = np.zeros((size, size), dtype=np.uint8)
    for n in range(1, rng.integers(1, max_objects + 1) + 1):
        shape_id = int(rng.integers(len(SHAPES)))
        mask = _shape_mask(rng, SHAPES[shape_id], size)
        image[mask] = _texture(rng, size, PATTERNS[shape_id])[mask]
        labels[mask] = shape_id + 1
        instance_ids[mask] = n
    image = np.clip(image, 0, 255).astype(np.uint8)
    return (image, labels, instance_ids) if with_instances else (image, labels)


def write_image_folder(root: str, num_images: int, size: int = 96, seed: int = 0) -> None:
    """Write ``num_images`` scenes as ``root/000000.png ...`` (an unlabelled image folder)."""
    if num_images < 1:
        raise ValueError(f'num_images must be positive, got {num_images}')
    os.makedirs(root, exist_ok=True)
    for index in range(num_images):
        image, _ = render_scene(seed, index, size)
        Image.fromarray(image).save(osp.join(root, f'{index:06d}.png'))
