"""Generated scenes written in the real ADE20K and COCO layouts, so mmseg's and mmdet's own
dataset classes, pipelines and metrics run on them unchanged."""
import json
import os
import os.path as osp
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from .synthetic_scenes import SHAPES, render_scene

# Written at the root of every generated set, so result tables can label its rows.
BUILTIN_MARKER = 'densevit_builtin_data.json'

# Index offsets keep the splits disjoint while every image stays a function of (seed, index).
_SPLIT_OFFSET = {'training': 0, 'validation': 1_000_000, 'train2017': 0, 'val2017': 1_000_000}


def write_marker(root: str, **info) -> None:
    """Mark ``root`` as generated data (read by the benchmark table)."""
    os.makedirs(root, exist_ok=True)
    with open(osp.join(root, BUILTIN_MARKER), 'w') as f:
        json.dump(dict(generator='densevit_mm.datasets', **info), f)


def write_ade20k_layout(root: str, num_train: int, num_val: int, size: int = 96,
                        seed: int = 0) -> str:
    """Write ``root/ADEChallengeData2016/{images,annotations}/{training,validation}``.

    Label maps follow ADE20K: 0 means "other" (ignored with ``reduce_zero_label``), the
    background is 1 and shape ``k`` of :data:`SHAPES` is ``k + 2``.

    Returns:
        str: the ``ADEChallengeData2016`` folder.
    """
    base = osp.join(root, 'ADEChallengeData2016')
    for split, count in (('training', num_train), ('validation', num_val)):
        os.makedirs(osp.join(base, 'images', split), exist_ok=True)
        os.makedirs(osp.join(base, 'annotations', split), exist_ok=True)
        for i in range(count):
            image, labels = render_scene(seed, _SPLIT_OFFSET[split] + i, size)
            name = f'ADE_{split[:5]}_{i:08d}'
            Image.fromarray(image).save(osp.join(base, 'images', split, name + '.jpg'),
                                        quality=95)
            Image.fromarray(labels + 1).save(osp.join(base, 'annotations', split, name + '.png'))
    write_marker(root, layout='ade20k', num_train=num_train, num_val=num_val, size=size,
                 seed=seed)
    return base


def _instances(labels: np.ndarray, instance_ids: np.ndarray):
    """Yield ``(shape index, polygons, bbox, area)`` for every visible object."""
    for inst in np.unique(instance_ids):
        if inst == 0:
            continue
        mask = (instance_ids == inst).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polygons = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
        if not polygons:
            continue
        ys, xs = np.nonzero(mask)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1)]
        shape_id = int(labels[ys[0], xs[0]]) - 1
        yield shape_id, polygons, bbox, float(mask.sum())


def write_coco_layout(root: str, num_train: int, num_val: int, size: int = 96, seed: int = 0,
                      category_names: Sequence[str] = SHAPES) -> str:
    """Write ``root/{train2017,val2017}/*.jpg`` and ``root/annotations/instances_*.json``.

    Each visible object is one instance with polygon masks of its visible part (occluded
    objects keep what remains). ``category_names[k]`` names shape ``k`` of :data:`SHAPES`;
    further names are listed as categories without instances, so a test can use COCO's 80
    class names and configs made for COCO unchanged. Returns ``root``.
    """
    if len(category_names) < len(SHAPES):
        raise ValueError(f'need at least {len(SHAPES)} category names, got '
                         f'{len(category_names)}')
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=k + 1, name=name, supercategory='shape')
                  for k, name in enumerate(category_names)]
    for split, count in (('train2017', num_train), ('val2017', num_val)):
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image, labels, instance_ids = render_scene(
                seed, _SPLIT_OFFSET[split] + i, size, with_instances=True)
            file_name = f'{i:012d}.jpg'
            Image.fromarray(image).save(osp.join(root, split, file_name), quality=95)
            images.append(dict(id=i + 1, file_name=file_name, height=size, width=size))
            for shape_id, polygons, bbox, area in _instances(labels, instance_ids):
                annotations.append(dict(id=len(annotations) + 1, image_id=i + 1,
                                        category_id=shape_id + 1, segmentation=polygons,
                                        bbox=bbox, area=area, iscrowd=0))
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    write_marker(root, layout='coco', num_train=num_train, num_val=num_val, size=size,
                 seed=seed)
    return root
