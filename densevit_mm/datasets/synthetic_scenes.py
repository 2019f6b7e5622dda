"""Deterministic generated scenes: textured objects of a few shapes on textured backgrounds.

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


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size, 3)`` float texture: a colour with oriented stripes and noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # (S, S) each
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, 16)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    base = rng.uniform(0, 255, size=3)
    other = rng.uniform(0, 255, size=3)
    mix = rng.uniform(0.2, 0.8) * stripes[..., None]  # (S, S, 1)
    tex = base * (1 - mix) + other * mix  # (S, S, 3)
    return tex + rng.normal(0, 8, size=tex.shape)


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
    image = _texture(rng, size)
    labels = np.zeros((size, size), dtype=np.uint8)
    instance_ids = np.zeros((size, size), dtype=np.uint8)
    for n in range(1, rng.integers(1, max_objects + 1) + 1):
        shape_id = int(rng.integers(len(SHAPES)))
        mask = _shape_mask(rng, SHAPES[shape_id], size)
        image[mask] = _texture(rng, size)[mask]
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
