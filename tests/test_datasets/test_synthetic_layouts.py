import json
import os.path as osp

import numpy as np
from mmdet.datasets import CocoDataset
from mmengine.registry import init_default_scope
from mmseg.datasets import ADE20KDataset
import torch
import torch.nn.functional as F
from PIL import Image

from densevit_mm.datasets import (BUILTIN_MARKER, SHAPES, render_scene, write_ade20k_layout,
                                  write_coco_layout, write_image_folder)
from densevit_mm.datasets.synthetic_scenes import _smooth_field


def test_scenes_are_deterministic_and_seed_dependent():
    a = render_scene(0, 5, 64, with_instances=True)
    b = render_scene(0, 5, 64, with_instances=True)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(render_scene(1, 5, 64)[0], a[0])
    image, labels, instances = a
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert set(np.unique(labels)) <= set(range(len(SHAPES) + 1))
    # an object's visible pixels carry its shape label everywhere
    for inst in np.unique(instances)[1:]:
        assert len(np.unique(labels[instances == inst])) == 1


def test_smooth_background_field_is_bilinear_upsampling():
    """The background's random field equals torch's bilinear (align_corners) upsampling."""
    field = _smooth_field(np.random.default_rng(3), 37, 4)
    grid = np.random.default_rng(3).uniform(0, 1, size=(5, 5))
    reference = F.interpolate(torch.from_numpy(grid)[None, None], size=(37, 37),
                              mode='bilinear', align_corners=True)[0, 0].numpy()
    np.testing.assert_allclose(field, reference, rtol=0, atol=1e-12)


def test_image_folder_is_reproducible(tmp_path):
    write_image_folder(str(tmp_path / 'a'), 3, 32, seed=7)
    write_image_folder(str(tmp_path / 'b'), 5, 32, seed=7)  # a larger set extends a smaller
    for i in range(3):
        name = f'{i:06d}.png'
        assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes()


def test_ade20k_layout_loads_in_mmseg(tmp_path):
    base = write_ade20k_layout(str(tmp_path), num_train=3, num_val=2, size=48, seed=0)
    assert osp.isfile(tmp_path / BUILTIN_MARKER)
    init_default_scope('mmseg')
    dataset = ADE20KDataset(
        data_root=base, data_prefix=dict(img_path='images/validation',
                                         seg_map_path='annotations/validation'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True)])
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample['img'].shape == (48, 48, 3)
    # background is class 0, shapes 1..4 after reduce_zero_label; nothing is ignored (255)
    assert set(np.unique(sample['gt_seg_map'])) <= set(range(len(SHAPES) + 1))


def test_coco_layout_loads_in_mmdet_with_consistent_boxes_and_masks(tmp_path):
    root = write_coco_layout(str(tmp_path), num_train=4, num_val=2, size=64, seed=0) + '/'
    init_default_scope('mmdet')
    dataset = CocoDataset(
        data_root=root, ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'), metainfo=dict(classes=SHAPES),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
    assert len(dataset) == 4
    total = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        boxes, masks = sample['gt_bboxes'].tensor.numpy(), sample['gt_masks'].masks
        total += len(boxes)
        for box, mask in zip(boxes, masks):
            ys, xs = np.nonzero(mask)
            # the box encloses the rasterised polygon to within a pixel
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1
            assert ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1
    assert total >= 4
    with open(tmp_path / 'annotations' / 'instances_val2017.json') as f:
        val = json.load(f)
    assert [c['name'] for c in val['categories']] == list(SHAPES)
    assert Image.open(tmp_path / 'val2017' / val['images'][0]['file_name']).size == (64, 64)
