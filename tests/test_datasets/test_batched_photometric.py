"""The batched photometric ops against mmpretrain's / mmcv's per-image ones, the parameter
draws of DeferredPhotometric, and the whole two-view pipeline with either option."""
import random

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, default_collate
from mmengine.registry import FUNCTIONS
from mmpretrain.registry import MODELS, TRANSFORMS
from PIL import Image, ImageFilter

from densevit_mm.compat import adjust_hue
from densevit_mm.datasets.transforms import DeferredPhotometric
from densevit_mm.datasets.transforms import batched_photometric as bp
from tests.conftest import load_tool

CPU_CONFIG = 'configs/pretrain/densevit_s_worker-augment.py'
DEVICE_CONFIG = 'configs/pretrain/densevit_s_device-photometric.py'
DEFAULT_CONFIG = 'configs/pretrain/densevit_s.py'  # views made on the device from decoded images


def images(seed=0, count=5, height=37, width=53):
    """Random uint8 BGR images of an odd size, with grey, saturated, black and white areas
    (the corner cases of HSV) and a smooth gradient (where a blur's rounding shows)."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    out[0, :6] = 128
    out[1, :6] = (255, 0, 0)
    out[2, :6], out[2, 6:12] = 0, 255
    ramp = np.linspace(0, 255, width)[None, :, None]
    out[3] = np.broadcast_to(ramp + np.linspace(0, 40, height)[:, None, None],
                             (height, width, 3)).clip(0, 255).astype(np.uint8)
    return out


def to_tensor(batch):
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float()


def to_numpy(tensor):
    return tensor.permute(0, 2, 3, 1).numpy().astype(np.int64)


def per_image(op, batch, factors):
    return np.stack([op(img.copy(), f) for img, f in zip(batch, factors)]).astype(np.int64)


PER_IMAGE_OPS = {
    'brightness': (lambda img, f: mmcv.adjust_brightness(img, f, backend='pillow'),
                   bp.adjust_brightness, (0.0, 0.6, 1.0, 1.4, 2.5)),
    'contrast': (lambda img, f: mmcv.adjust_contrast(img, f, backend='pillow'),
                 bp.adjust_contrast, (0.0, 0.6, 1.0, 1.4, 2.5)),
    'saturation': (lambda img, f: mmcv.adjust_color(img, alpha=f, backend='pillow'),
                   bp.adjust_saturation, (0.0, 0.6, 1.0, 1.4, 2.5)),
}


@pytest.mark.filterwarnings('ignore:Only use')
@pytest.mark.parametrize('name', sorted(PER_IMAGE_OPS))
def test_colour_ops_equal_mmcv_pillow_backend_exactly(name):
    reference, batched, fixed = PER_IMAGE_OPS[name]
    batch = images()
    rng = np.random.default_rng(1)
    for factors in [fixed] + [rng.uniform(0.6, 1.4, len(batch)) for _ in range(20)]:
        expected = per_image(reference, batch, factors)
        got = to_numpy(batched(to_tensor(batch), torch.tensor(factors)))
        np.testing.assert_array_equal(got, expected)


def test_hue_equals_mmcv_pillow_backend_exactly_even_for_a_zero_shift():
    batch = images()
    rng = np.random.default_rng(2)
    for factors in [(0.0, -0.5, 0.5, -0.1, 0.003)] + [rng.uniform(-0.1, 0.1, len(batch))
                                                       for _ in range(20)]:
        expected = per_image(lambda img, f: adjust_hue(img, f, backend='pillow'), batch,
                             factors)
        shifts = torch.tensor([float(int(f * 255) % 256) for f in factors])
        got = to_numpy(bp.adjust_hue(to_tensor(batch), shifts))
        np.testing.assert_array_equal(got, expected)
    # the 8-bit HSV round trip is lossy: a zero shift changes the image, in both ops
    zero = to_numpy(bp.adjust_hue(to_tensor(batch), torch.zeros(len(batch))))
    assert (zero != batch).any()


@pytest.mark.parametrize('channel_weights', [(0.114, 0.587, 0.2989), (1., 1., 1.), (3, 5, 0)])
def test_grayscale_equals_mmcv_random_grayscale_exactly(channel_weights):
    batch = images()
    gray = TRANSFORMS.build(dict(type='RandomGrayscale', prob=1.0, keep_channels=True,
                                 channel_weights=channel_weights))
    expected = np.stack([gray(dict(img=img.copy()))['img'] for img in batch]).astype(np.int64)
    weights = np.array(gray.channel_weights) / sum(gray.channel_weights)
    got = to_numpy(bp.grayscale(to_tensor(batch), torch.tensor(weights).expand(len(batch), 3)))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize('height,width', [(37, 53), (1, 1), (2, 3), (9, 1)])
def test_blur_equals_pillow_gaussian_blur_exactly(height, width):
    """Radii of the recipe's range and beyond it (box radii 0 to 11), on a normal size and on
    images narrower than the box, where Pillow's edge handling matters."""
    batch = images(height=height, width=width) if height > 6 else \
        np.random.default_rng(4).integers(0, 256, (5, height, width, 3), dtype=np.uint8)
    rng = np.random.default_rng(3)
    for radii in [(0.1, 0.5, 1.0, 1.9, 2.0), (0.001, 2.5, 5.0, 12.0, 20.0)] + [
            rng.uniform(0.1, 2.0, len(batch)) for _ in range(5)]:
        expected = np.stack([np.array(Image.fromarray(img).filter(
            ImageFilter.GaussianBlur(radius=float(r)))) for img, r in zip(batch, radii)])
        got = to_numpy(bp.gaussian_blur(to_tensor(batch), torch.tensor(radii)))
        np.testing.assert_array_equal(got, expected.astype(np.int64))


def test_box_blur_weights_follow_pillows_extended_box():
    # Pillow's _gaussian_blur_radius with 3 passes, worked by hand: radius 2 -> sigma^2 = 4/3,
    # box 1 + 0.375, weights 2^24 / 3.75 inside and the rest of 2^24 halved on each side
    r, inner, outer = bp.box_blur_weights(np.array([2.0, 0.1, 5.0]))
    assert r.tolist() == [1, 0, 4]
    assert inner.tolist() == [4473924, 16721291, 1694668]
    assert outer.tolist() == [1677722, 27962, 762602]


def draw_rows(transform, count, seed=0):
    np.random.seed(seed)
    random.seed(seed)
    return np.stack([transform(dict(img=None))['photometric'] for _ in range(count)])


def photometric_cfg():
    return Config.fromfile(CPU_CONFIG).photometric_transforms


def test_draws_follow_the_configured_probabilities_and_ranges():
    rows = draw_rows(DeferredPhotometric(photometric_cfg()), 4000)
    n = len(rows)
    for column, p in ((bp.JITTER, 0.8), (bp.GRAY, 0.2), (bp.BLUR, 0.5)):
        share = rows[:, column].mean()
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / n), (column, share)
    jitter = rows[rows[:, bp.JITTER] == 1]
    assert (np.sort(jitter[:, bp.ORDER], axis=1) == np.arange(4)).all()  # a permutation
    for column in (bp.FACTORS.start, bp.FACTORS.start + 1, bp.FACTORS.start + 2):
        values = jitter[:, column]
        assert values.min() >= 0.6 and values.max() <= 1.4
        assert values.min() < 0.61 and values.max() > 1.39  # the whole range is drawn
    shifts = jitter[:, bp.FACTORS.start + 3]
    signed = np.where(shifts > 127, shifts - 256, shifts)  # int(h * 255) for h in +-0.1
    assert signed.min() == -25 and signed.max() == 25
    assert np.isnan(rows[rows[:, bp.JITTER] == 0][:, bp.FACTORS]).all()
    blurred = rows[rows[:, bp.BLUR] == 1][:, bp.RADIUS]
    assert blurred.min() >= 0.1 and blurred.max() <= 2.0 and blurred.max() > 1.98
    gray = rows[rows[:, bp.GRAY] == 1][:, bp.GRAY_WEIGHTS]
    np.testing.assert_allclose(gray, np.tile(np.array([0.114, 0.587, 0.2989]) / 0.9999,
                                             (len(gray), 1)))


def test_draws_consume_the_generators_as_the_per_image_transforms_do():
    """Same seed, same parameters: DeferredPhotometric records what the transforms it wraps
    would have drawn, and leaves the generators where they would have."""
    deferred = DeferredPhotometric(photometric_cfg())
    img = images()[1]
    for seed in range(30):
        row = draw_rows(deferred, 1, seed)[0]
        after_deferred = np.random.rand(), random.random()
        np.random.seed(seed)
        random.seed(seed)
        expected = img.copy()
        for t in photometric_cfg():
            expected = TRANSFORMS.build(t)(dict(img=expected))['img']
        after_per_image = np.random.rand(), random.random()
        assert after_deferred == after_per_image
        got = bp.apply_photometric(to_tensor(img[None]), torch.tensor(row[None]))
        np.testing.assert_array_equal(to_numpy(got)[0], expected)


@pytest.mark.parametrize('transforms,message', [
    ([dict(type='Solarize', thr=128)], 'Solarize is not supported'),
    ([dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf'),
      dict(type='RandomGrayscale', prob=0.2, keep_channels=True)], 'in this order'),
    ([dict(type='ColorJitter', brightness=0.4, backend='cv2')], "'pillow' backend only"),
    ([dict(type='RandomGrayscale', prob=0.2)], 'keep_channels=False'),
    ([dict(type='RandomGrayscale', keep_channels=True, channel_weights=(1, 1, 1, 1))],
     'three non-negative channel_weights'),
    ([dict(type='RandomGrayscale', keep_channels=True, channel_weights=(1, -1, 1))],
     'three non-negative channel_weights'),
])
def test_unsupported_photometric_transforms_are_refused_with_what_is_supported(transforms,
                                                                               message):
    with pytest.raises(ValueError, match=message):
        DeferredPhotometric(transforms)


@pytest.mark.parametrize('view', [
    ['DeferredPhotometric', 'RandomResizedCropWithBox', 'RandomFlip'],
    ['RandomResizedCropWithBox', 'DeferredPhotometric', 'Solarize'],
])
def test_deferred_photometric_must_follow_the_crop_with_only_flips_after_it(view):
    cfgs = {'DeferredPhotometric': dict(type='DeferredPhotometric', transforms=[]),
            'RandomResizedCropWithBox': dict(type='RandomResizedCropWithBox', scale=32),
            'RandomFlip': dict(type='RandomFlip', prob=0.5),
            'Solarize': dict(type='Solarize', thr=128)}
    with pytest.raises(ValueError, match='after RandomResizedCropWithBox, followed by '
                                         'horizontal RandomFlips only'):
        TRANSFORMS.build(dict(type='MultiViewWithGeometry', num_views=2,
                              transforms=[[cfgs[name] for name in view]]))


def generated_jpegs(tmp_path, count):
    return load_tool('benchmark_data').write_jpegs(str(tmp_path), count)


def two_view_batch(config, paths, seed):
    cfg = Config.fromfile(config)
    pipeline = Compose(cfg.train_dataloader.dataset.pipeline)
    out = []
    for i, path in enumerate(paths):
        np.random.seed(seed + i)
        random.seed(seed + i)
        out.append(pipeline(dict(img_path=path)))
    collate = FUNCTIONS.get(cfg.train_dataloader.collate_fn.type)
    return MODELS.build(cfg.data_preprocessor)(collate(out), True)


@pytest.mark.parametrize('config', [DEVICE_CONFIG, DEFAULT_CONFIG])
def test_device_options_give_the_per_image_pipelines_views_for_the_same_seeds(tmp_path, config):
    """The ImageNet config's two-view pipeline, crops, flips and normalisation included:
    with the photometric part deferred to PhotometricDataPreprocessor, or every per-pixel
    step to DeviceAugmentDataPreprocessor, the model gets the same input tensors."""
    paths = generated_jpegs(tmp_path, 12)
    per_image = two_view_batch(CPU_CONFIG, paths, seed=5)
    device = two_view_batch(config, paths, seed=5)
    rows = np.stack([s.view_photometric for s in device['data_samples']])  # (B, 2, K)
    assert rows.shape == (12, 2, bp.NUM_COLUMNS)
    for column in (bp.JITTER, bp.GRAY, bp.BLUR):  # the comparison covers each op
        assert 0 < rows[:, :, column].sum() < rows[:, :, column].size
    for view in range(2):
        assert device['inputs'][view].dtype == torch.float32
        torch.testing.assert_close(device['inputs'][view], per_image['inputs'][view],
                                   rtol=0, atol=0)
    for a, b in zip(device['data_samples'], per_image['data_samples']):
        np.testing.assert_array_equal(a.view_geometry, b.view_geometry)


def test_a_training_batch_without_drawn_parameters_is_refused(tmp_path):
    paths = generated_jpegs(tmp_path, 2)
    cfg = Config.fromfile(CPU_CONFIG)
    pipeline = Compose(cfg.train_dataloader.dataset.pipeline)
    batch = default_collate([pipeline(dict(img_path=p)) for p in paths])
    preprocessor = MODELS.build(Config.fromfile(DEVICE_CONFIG).data_preprocessor)
    with pytest.raises(ValueError, match='without view_photometric.*DeferredPhotometric'):
        preprocessor(batch, True)
    out = preprocessor(batch, False)  # evaluation: normalised only
    assert out['inputs'][0].shape == (2, 3, 224, 224)


@pytest.mark.gpu
def test_batched_ops_on_cuda_equal_the_cpu_ones():
    # separate float32 / float64 kernels (no fused multiply-add across ops), integer sums,
    # table look-ups: CUDA should give the CPU's result exactly
    batch = to_tensor(images(count=64, height=224, width=224))
    rows = draw_rows(DeferredPhotometric(photometric_cfg()), 64, seed=1)
    cpu = bp.apply_photometric(batch, rows)
    cuda = bp.apply_photometric(batch.cuda(), rows).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=0, atol=0)
