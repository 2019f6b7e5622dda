import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.registry import TRANSFORMS

from densevit_mm.evaluation import (correspondence_accuracy, patch_centers_in_source,
                                    true_correspondence)


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')  # the view pipelines are built in mmpretrain's registry


def coordinate_image(h=160, w=200):
    """uint8 BGR image whose pixel (y, x) holds x in channel 0 and y in channel 1."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx, yy, np.zeros_like(xx)], axis=2).astype(np.uint8)


def two_views(seed, flip_prob=0.5):
    np.random.seed(seed)
    view = [dict(type='RandomResizedCropWithBox', scale=64, crop_ratio_range=(0.3, 1.)),
            dict(type='RandomFlip', prob=flip_prob)]
    multi = TRANSFORMS.build(dict(type='MultiViewWithGeometry', num_views=2, transforms=[view]))
    return multi(dict(img=coordinate_image()))


@pytest.mark.parametrize('seed', range(6))
def test_recorded_geometry_locates_every_patch_centre(seed):
    out = two_views(seed)
    geometry = torch.from_numpy(out['view_geometry'])  # (2, 7)
    assert geometry.shape == (2, 7) and geometry[:, 5:].tolist() == [[64, 64], [64, 64]]
    centres = patch_centers_in_source(geometry, (4, 4))  # (2, 16, 2)
    for v, img in enumerate(out['img']):
        # the pixel nearest each patch centre (16-pixel patches) holds its source (x, y)
        pix = img[8::16, 8::16, :2].reshape(16, 2).astype(np.float32)
        np.testing.assert_allclose(pix, centres[v].numpy(), atol=3.0)


def test_true_correspondence_identity_and_flip():
    geom = torch.tensor([[10., 20., 110., 120., 0., 64., 64.]])
    index, inside = true_correspondence(geom, geom, (4, 4))
    assert inside.all() and index.tolist() == [list(range(16))]
    flipped = geom.clone()
    flipped[0, 4] = 1.
    index, _ = true_correspondence(geom, flipped, (4, 4))
    assert index.view(4, 4)[0].tolist() == [3, 2, 1, 0]  # columns mirrored
    # a query view entirely left of the key view: nothing corresponds
    far = torch.tensor([[200., 20., 300., 120., 0., 64., 64.]])
    _, inside = true_correspondence(far, geom, (4, 4))
    assert not inside.any()


def test_accuracy_counts_matches_within_one_patch():
    geom = torch.tensor([[0., 0., 64., 64., 0., 64., 64.]])
    truth = torch.arange(16).view(1, 16)
    assert float(correspondence_accuracy(truth, geom, geom, (4, 4))) == 1.0
    shifted = (truth + 1).clamp(max=15)  # one column off (or wrapping to the next row)
    acc = float(correspondence_accuracy(shifted, geom, geom, (4, 4)))
    # column 3 wraps to column 0 of the next row: 3 patches miss, 13 are within one
    assert acc == pytest.approx(13 / 16)


def test_views_need_a_crop_that_records_its_box():
    with pytest.raises(ValueError,
                       match='needs one RandomResizedCropWithBox or DeferredResizedCrop'):
        TRANSFORMS.build(dict(type='MultiViewWithGeometry', num_views=2,
                              transforms=[[dict(type='RandomResizedCrop', scale=64)]]))
