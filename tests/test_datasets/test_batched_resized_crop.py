"""The batched crop-and-resize against mmcv's Pillow resize, the deferred crop's draws, the
collate of decoded images and the preprocessor that makes the views."""
import itertools

import mmcv
import numpy as np
import pytest
import torch
from mmpretrain.registry import MODELS, TRANSFORMS
from mmpretrain.structures import DataSample

from densevit_mm.datasets import collate_source_images
from densevit_mm.datasets.transforms import batched_resized_crop as brc


def pillow_view(img, box, size):
    """What RandomResizedCropWithBox(backend='pillow') makes of ``box``."""
    x1, y1, x2, y2 = box
    crop = mmcv.imcrop(img, np.array([x1, y1, x2 - 1, y2 - 1]))
    return mmcv.imresize(crop, size[::-1], interpolation='bilinear', backend='pillow')


def random_images(rng, count, largest):
    """Noise (where every rounding shows) and smooth ramps, of random sizes."""
    out = []
    for i in range(count):
        h, w = (int(s) for s in rng.integers(1, largest, 2))
        if i % 2:
            out.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        else:
            ramp = np.add.outer(np.linspace(0, 200, h), np.linspace(0, 55, w))
            out.append(np.repeat(ramp[:, :, None], 3, axis=2).astype(np.uint8))
    return out


def flat_sources(images):
    offsets = np.cumsum([0] + [img.size for img in images])[:-1]
    return torch.from_numpy(np.concatenate([img.reshape(-1) for img in images])), offsets


def boxes_of(rng, images, per_image):
    rows = []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        for _ in range(per_image):
            x1, y1 = int(rng.integers(0, w)), int(rng.integers(0, h))
            rows.append((i, x1, y1, int(rng.integers(x1 + 1, w + 1)),
                         int(rng.integers(y1 + 1, h + 1))))
    return np.array(rows)


@pytest.mark.parametrize('out_size', [(224, 224), (96, 96), (40, 70)])
def test_views_equal_mmcv_pillow_resize_of_the_crop_exactly(out_size):
    """Random crops of random images: up- and downscales, both of Pillow's pass orders,
    one-pixel crops, whole images."""
    rng = np.random.default_rng(0)
    images = random_images(rng, 24, 700)
    sources, offsets = flat_sources(images)
    rows = boxes_of(rng, images, 4)
    extra = [(0, 0, 0, images[0].shape[1], images[0].shape[0]), (1, 0, 0, 1, 1)]
    rows = np.concatenate([rows, np.array(extra)])
    shapes = np.array([images[i].shape[:2] for i in rows[:, 0]])
    got = brc.resized_crops(sources, offsets[rows[:, 0]], shapes, rows[:, 1:], out_size)
    assert got.shape == (len(rows), 3, *out_size) and got.dtype == torch.float32
    expected = np.stack([pillow_view(images[i], box, out_size) for i, *box in rows])
    np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(), expected)
    heights, widths = rows[:, 4] - rows[:, 2], rows[:, 3] - rows[:, 1]
    first = brc.vertical_first(heights, widths, *out_size)
    assert first.any() and not first.all()  # both pass orders were compared


def test_a_large_downscale_and_an_image_of_its_own_size_group():
    """A 2000-pixel crop (21 taps per output pixel) among small ones."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (2100, 1500, 3), dtype=np.uint8)] + random_images(rng, 6, 300)
    sources, offsets = flat_sources(images)
    rows = np.concatenate([[(0, 10, 40, 1490, 2040)], boxes_of(rng, images[1:], 2) + [1, 0, 0,
                                                                                      0, 0]])
    shapes = np.array([images[i].shape[:2] for i in rows[:, 0]])
    got = brc.resized_crops(sources, offsets[rows[:, 0]], shapes, rows[:, 1:], (224, 224))
    expected = np.stack([pillow_view(images[i], box, (224, 224)) for i, *box in rows])
    np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(), expected)


def test_bilinear_weights_of_a_halving_worked_by_hand():
    # 4 -> 2: support 2, window of output 0 is inputs 0..2 at distances 0.25, 0.25, 0.75 ->
    # triangle 0.75, 0.75, 0.25, normalised by 1.75, in 22-bit fixed point
    first, weights = brc.bilinear_weights(4, 2)
    assert first.tolist() == [0, 1]
    assert weights[0].tolist() == [1797559, 1797559, 599186, 0, 0]
    assert weights[1].tolist() == [599186, 1797559, 1797559, 0, 0]
    assert weights.sum(axis=1).tolist() == [1 << 22, 1 << 22]


def padded_area(groups, heights, widths):
    return sum(len(g) * heights[g].max() * widths[g].max() for g in groups)


def test_size_groups_take_every_view_once_with_the_least_padding():
    rng = np.random.default_rng(2)
    heights = np.concatenate([rng.integers(150, 500, 126), [4000, 3000]])
    widths = np.concatenate([rng.integers(150, 500, 126), [3000, 20]])
    groups = brc.size_groups(heights, widths)
    assert sorted(np.concatenate(groups).tolist()) == list(range(128))
    assert len(groups) == brc.MAX_GROUPS
    assert [len(g) for g in groups if 126 in g] == [1]  # the 4000 x 3000 crop alone
    one = padded_area([np.arange(128)], heights, widths)
    assert padded_area(groups, heights, widths) < min(one / 30, 2 * (heights * widths).sum())
    # the optimum over every cut of the area-sorted views, on a small case
    h, w = heights[:9], widths[:9]
    order = np.argsort(-(h * w), kind='stable')
    brute = min(padded_area(np.split(order, cuts), h, w)
                for k in range(brc.MAX_GROUPS) for cuts in itertools.combinations(range(1, 9), k))
    assert padded_area(brc.size_groups(h, w), h, w) == brute
    assert brc.size_groups(np.array([], int), np.array([], int)) == []


def test_a_box_outside_its_image_is_refused_naming_it():
    sources, offsets = flat_sources([np.zeros((10, 20, 3), np.uint8)])
    with pytest.raises(ValueError, match=r'crop box \[5, 0, 25, 10\] of view 0 is empty or '
                                         r'leaves its 10 x 20 image'):
        brc.resized_crops(sources, offsets, np.array([[10, 20]]), np.array([[5, 0, 25, 10]]),
                          (8, 8))


CROP = dict(scale=32, crop_ratio_range=(0.2, 1.), backend='pillow')


def test_deferred_crop_draws_as_the_crop_and_leaves_the_image():
    img = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    done = TRANSFORMS.build(dict(type='RandomResizedCropWithBox', **CROP))
    deferred = TRANSFORMS.build(dict(type='DeferredResizedCrop', **CROP))
    for seed in range(20):
        np.random.seed(seed)
        a = done(dict(img=img.copy()))
        after_done = np.random.random()
        np.random.seed(seed)
        b = deferred(dict(img=img))
        assert np.random.random() == after_done  # the same calls to the generator
        assert b['crop_box'] == a['crop_box'] and b['img'] is img
        assert b['img_shape'] == (32, 32) and b['source_shape'] == (50, 70)


@pytest.mark.parametrize('kwargs', [dict(backend='cv2'), dict(interpolation='bicubic')])
def test_deferred_crop_refuses_a_resize_it_does_not_reproduce(kwargs):
    with pytest.raises(ValueError, match="reproduces RandomResizedCrop\\(backend='pillow', "
                                         "interpolation='bilinear'\\)"):
        TRANSFORMS.build(dict(type='DeferredResizedCrop', **dict(CROP, **kwargs)))


@pytest.mark.parametrize('views, message', [
    ([['DeferredResizedCrop', 'RandomFlip'], ['RandomResizedCropWithBox']],
     'in every view pipeline of MultiViewWithGeometry or in none'),
    ([['DeferredResizedCrop', 'Solarize']], 'with DeferredPhotometric and one horizontal '
                                            'RandomFlip at most'),
    ([['DeferredResizedCrop', 'RandomFlip', 'RandomFlip']], 'one horizontal RandomFlip'),
    ([['RandomFlip', 'DeferredResizedCrop']], 'must start with it'),
    ([['DeferredResizedCrop', 'RandomResizedCropWithBox']], 'needs one RandomResizedCropWith'),
])
def test_deferred_view_pipelines_hold_only_what_the_device_applies(views, message):
    cfgs = {'DeferredResizedCrop': dict(type='DeferredResizedCrop', **CROP),
            'RandomResizedCropWithBox': dict(type='RandomResizedCropWithBox', **CROP),
            'RandomFlip': dict(type='RandomFlip', prob=0.5),
            'Solarize': dict(type='Solarize', thr=128)}
    with pytest.raises(ValueError, match=message):
        TRANSFORMS.build(dict(type='MultiViewWithGeometry', num_views=[1] * len(views),
                              transforms=[[cfgs[n] for n in view] for view in views]))


def test_collate_copies_the_part_of_each_image_its_views_cover():
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(5, 7, 3), (2, 3, 3)]]
    boxes = [[[1, 0, 3, 2], [2, 1, 6, 4]], [[0, 0, 3, 2], [0, 0, 1, 1]]]  # x1, y1, x2, y2
    samples = []
    for img, views in zip(images, boxes):
        geometry = np.zeros((2, 7), np.float32)
        geometry[:, :4] = views
        samples.append(dict(inputs=torch.from_numpy(img),
                            data_samples=DataSample(view_geometry=geometry)))
    batch = collate_source_images(samples)
    covered = [images[0][0:4, 1:6], images[1][0:2, 0:3]]  # the union of each image's boxes
    assert batch['inputs'].tolist() == np.concatenate([c.reshape(-1) for c in covered]).tolist()
    assert [s.source_shape for s in batch['data_samples']] == [(4, 5), (2, 3)]
    assert [s.source_origin for s in batch['data_samples']] == [(1, 0), (0, 0)]
    with pytest.raises(TypeError, match=r"got \(3, 5, 7\).*other pipelines collate with "
                                        r"dict\(type='default_collate'\)"):
        collate_source_images([dict(inputs=torch.zeros(3, 5, 7, dtype=torch.uint8),
                                    data_samples=DataSample(view_geometry=geometry))])


def test_the_preprocessor_refuses_a_training_batch_of_ready_views():
    preprocessor = MODELS.build(dict(type='DeviceAugmentDataPreprocessor'))
    batch = dict(inputs=[torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)],
                 data_samples=[DataSample(), DataSample()])
    with pytest.raises(ValueError, match="batch of ready views.*collate_source_images"):
        preprocessor(batch, True)
    assert preprocessor(batch, False)['inputs'][0].shape == (2, 3, 8, 8)  # evaluation


@pytest.mark.gpu
def test_cuda_equals_the_cpu_exactly():
    rng = np.random.default_rng(5)
    images = random_images(rng, 64, 600)
    sources, offsets = flat_sources(images)
    rows = boxes_of(rng, images, 2)
    shapes = np.array([images[i].shape[:2] for i in rows[:, 0]])
    cpu = brc.resized_crops(sources, offsets[rows[:, 0]], shapes, rows[:, 1:], (224, 224))
    cuda = brc.resized_crops(sources.cuda(), offsets[rows[:, 0]], shapes, rows[:, 1:],
                             (224, 224))
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=0)


def test_the_deferred_views_pickle_for_workers_started_with_spawn():
    import pickle

    from mmengine.config import Config
    pipeline = Config.fromfile('configs/pretrain/densevit_s.py').train_dataloader.dataset.pipeline
    views = TRANSFORMS.build(pipeline[1])
    again = pickle.loads(pickle.dumps(views))
    from densevit_mm.datasets import seeded
    img = np.random.default_rng(6).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    with seeded(3):
        a = views(dict(img=img))
    with seeded(3):
        b = again(dict(img=img))
    np.testing.assert_array_equal(a['view_geometry'], b['view_geometry'])
    np.testing.assert_array_equal(a['view_photometric'], b['view_photometric'])


@pytest.mark.parametrize('img', [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((8, 8, 4), np.uint8)])
def test_deferred_views_refuse_what_the_device_cannot_crop(img):
    views = TRANSFORMS.build(dict(type='MultiViewWithGeometry', num_views=2, transforms=[[
        dict(type='DeferredResizedCrop', **CROP)]]))
    with pytest.raises(ValueError, match=r"decoded \(H, W, 3\) uint8 images; x.jpg is .*"
                                         r"LoadImageFromFile\(color_type='color', "
                                         r"to_float32=False\)"):
        views(dict(img=img, img_path='x.jpg'))
