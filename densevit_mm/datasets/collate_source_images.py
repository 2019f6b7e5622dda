"""Batches of decoded images of any size, for views that are cut on the device."""
from typing import Sequence

import torch
from mmengine.registry import FUNCTIONS


@FUNCTIONS.register_module()
def collate_source_images(data_batch: Sequence[dict]) -> dict:
    """Collate samples whose ``inputs`` are decoded images of different sizes.

    Each sample's ``inputs`` is an ``(H, W, 3)`` uint8 tensor (``MultiViewWithGeometry`` with
    ``DeferredResizedCrop`` leaves the decoded image so).  They are concatenated, flattened,
    into one uint8 tensor -- one copy here in the worker (into shared memory), one transfer
    to the device -- and
    each data sample gets its image's ``source_shape`` ``(H, W)`` in its metainfo, from which
    ``DeviceAugmentDataPreprocessor`` finds the images again.

    Returns:
        dict: ``inputs`` (the 1-D uint8 tensor) and ``data_samples`` (the list).
    """
    images, samples = [], []
    for item in data_batch:
        image = item['inputs']
        if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8
                and image.dim() == 3 and image.shape[2] == 3):
            kind = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)
            raise TypeError(
                'collate_source_images takes samples whose inputs are decoded (H, W, 3) uint8 '
                f'images, got {kind}: it goes with MultiViewWithGeometry and '
                'DeferredResizedCrop (configs/pretrain/densevit_s.py); other pipelines '
                "collate with dict(type='default_collate')")
        item['data_samples'].set_metainfo(dict(source_shape=tuple(image.shape[:2])))
        images.append(image.reshape(-1))
        samples.append(item['data_samples'])
    out = None
    if torch.utils.data.get_worker_info() is not None:
        # in a worker, concatenate straight into shared memory: the batch then crosses to the
        # main process without another copy (as torch's default_collate does)
        storage = images[0].untyped_storage()._new_shared(sum(i.numel() for i in images))
        out = torch.empty(0, dtype=torch.uint8).set_(storage)
    return dict(inputs=torch.cat(images, out=out), data_samples=samples)
