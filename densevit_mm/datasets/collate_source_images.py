"""Batches of decoded images of any size, for views that are cut on the device."""
from typing import Sequence

import numpy as np
import torch
from mmengine.registry import FUNCTIONS


@FUNCTIONS.register_module()
def collate_source_images(data_batch: Sequence[dict]) -> dict:
    """Collate samples whose ``inputs`` are decoded images of different sizes.

    Each sample's ``inputs`` is an ``(H, W, 3)`` uint8 tensor (``MultiViewWithGeometry`` with
    ``DeferredResizedCrop`` leaves the decoded image so) and its data sample holds the views'
    crop boxes (``view_geometry``).  Only the part of each image that some view covers -- the
    boxes' union, on average 70% of an image for the DenseCL crops -- is copied, flattened,
    into one uint8 tensor: one copy here in the worker (into shared memory), one transfer to
    the device.  Each data sample gets ``source_shape`` ``(h, w)`` and ``source_origin``
    ``(x, y)`` of its copied part in its metainfo, from which
    ``DeviceAugmentDataPreprocessor`` finds the views again.

    Returns:
        dict: ``inputs`` (the 1-D uint8 tensor) and ``data_samples`` (the list).
    """
    parts, samples = [], []
    for item in data_batch:
        image, sample = item['inputs'], item['data_samples']
        if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8
                and image.dim() == 3 and image.shape[2] == 3) or 'view_geometry' not in sample:
            kind = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)
            raise TypeError(
                'collate_source_images takes samples whose inputs are decoded (H, W, 3) uint8 '
                f'images with their view_geometry, got {kind}: it goes with '
                'MultiViewWithGeometry and DeferredResizedCrop (configs/pretrain/densevit_s.py); '
                "other pipelines collate with dict(type='default_collate')")
        boxes = np.asarray(sample.view_geometry)[:, :4].astype(np.int64)  # (V, 4)
        x1, y1 = boxes[:, :2].min(axis=0)
        x2, y2 = boxes[:, 2:].max(axis=0)
        sample.set_metainfo(dict(source_shape=(int(y2 - y1), int(x2 - x1)),
                                 source_origin=(int(x1), int(y1))))
        parts.append(image[y1:y2, x1:x2])  # a view: copied once, below
        samples.append(sample)
    total = sum(part.numel() for part in parts)
    if torch.utils.data.get_worker_info() is not None:
        # in a worker, straight into shared memory: the batch then crosses to the main
        # process without another copy (as torch's default_collate does)
        out = torch.empty(0, dtype=torch.uint8).set_(
            parts[0].untyped_storage()._new_shared(total))
    else:
        out = torch.empty(total, dtype=torch.uint8)
    start = 0
    for part in parts:
        out[start:start + part.numel()].view(part.shape).copy_(part)
        start += part.numel()
    return dict(inputs=out, data_samples=samples)
