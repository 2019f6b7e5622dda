"""The pixel limit: an image whose header says it has more than ``max_pixels`` pixels is
refused before any decoder sees it, and skipped, counted and logged as an unreadable one."""
import itertools
import os
import os.path as osp

import cv2
import mmcv
import pytest
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image, ImageFile

from densevit_mm.datasets import (MAX_PIXELS, UnlabeledImageFolder, UnreadableImageError,
                                  image_size, too_large_reason, unreadable_reason,
                                  write_image_folder)
from tests.test_datasets.huge_headers import jpeg_claiming, png_claiming

PIPELINE = [dict(type='LoadImageFromFile'),
            dict(type='MultiViewWithGeometry', num_views=2, transforms=[[
                dict(type='RandomResizedCropWithBox', scale=32, backend='pillow')]]),
            dict(type='PackInputs', algorithm_keys=['view_geometry'])]
HUGE_REASON = ('too large: 30000 x 30000 = 900 MP exceeds the pixel limit of 134.2 MP '
               '(max_pixels=134217728; raise it if images this large are meant to be trained '
               'on, or shrink the file)')
RUN_IDS = itertools.count()


@pytest.fixture
def no_decoding(monkeypatch):
    """Every decoder the check could reach raises."""

    def decoded(*args, **kwargs):
        raise AssertionError('an image was decoded')

    monkeypatch.setattr(mmcv, 'imfrombytes', decoded)
    monkeypatch.setattr(cv2, 'imdecode', decoded)
    monkeypatch.setattr(ImageFile.ImageFile, 'load', decoded)


@pytest.fixture
def decodes_of(monkeypatch):
    """The files' bytes that ``cv2.imdecode`` (LoadImageFromFile's decoder) was given."""
    seen, real = [], cv2.imdecode

    def spy(buffer, flags):
        seen.append(buffer.tobytes())
        return real(buffer, flags)

    monkeypatch.setattr(cv2, 'imdecode', spy)
    return seen


@pytest.fixture
def folder_with_huge_image(tmp_path):
    """16 readable 64 px PNGs, a truncated JPEG and a PNG whose header says 30000 x 30000
    (the last two sort last).  Returns ``(root, huge path, huge bytes, truncated path)``."""
    root = tmp_path / 'images'
    write_image_folder(str(root / 'a'), num_images=16, size=64, seed=0)
    (root / 'b').mkdir()
    huge = root / 'b' / 'huge.png'
    truncated = root / 'b' / 'truncated.jpg'
    truncated.write_bytes(jpeg_claiming(tmp_path / 'small.jpg', 16, 16)[:200])
    return str(root), str(huge), png_claiming(huge, 30000, 30000), str(truncated)


@pytest.mark.parametrize('claiming', [png_claiming, jpeg_claiming])
def test_a_header_over_the_limit_is_refused_before_any_decoder_runs(tmp_path, no_decoding,
                                                                    claiming):
    path = tmp_path / f'huge.{claiming.__name__[:3]}'
    claiming(path, 30000, 30000)  # 900 MP: over PIL's own limit (179 MP), which must not act
    pil_limit = Image.MAX_IMAGE_PIXELS
    assert image_size(str(path)) == (30000, 30000)
    assert too_large_reason(str(path)) == HUGE_REASON
    assert unreadable_reason(str(path)) == HUGE_REASON
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # lifted for the header read only


def test_an_image_at_the_limit_is_taken_and_one_pixel_more_is_not(tmp_path):
    path = tmp_path / 'image.png'
    Image.new('RGB', (48, 32), (10, 200, 30)).save(path)
    assert MAX_PIXELS == 2 ** 27
    assert too_large_reason(str(path), max_pixels=48 * 32) is None
    assert unreadable_reason(str(path), max_pixels=48 * 32) is None
    assert unreadable_reason(str(path), max_pixels=48 * 32 - 1) == (
        'too large: 48 x 32 = 0.001536 MP exceeds the pixel limit of 0.001535 MP '
        '(max_pixels=1535; raise it if images this large are meant to be trained on, or '
        'shrink the file)')
    # headers that say one pixel more or less than the default limit (2**27 = 16384 x 8192)
    claiming = tmp_path / 'claiming.png'
    png_claiming(claiming, 16384, 8192)
    assert too_large_reason(str(claiming)) is None
    png_claiming(claiming, 16384, 8192 + 1)
    assert too_large_reason(str(claiming)).startswith('too large: 16384 x 8193 = ')


def test_the_data_set_applies_its_max_pixels_before_the_pipeline_decodes(tmp_path,
                                                                         decodes_of):
    root = str(tmp_path / 'images')
    write_image_folder(root, num_images=2, size=64, seed=0)
    at_limit = UnlabeledImageFolder(data_root=root, pipeline=PIPELINE, max_pixels=64 * 64)
    assert at_limit[0]['inputs'][0].shape == (3, 32, 32) and len(decodes_of) == 1
    below = UnlabeledImageFolder(data_root=root, pipeline=PIPELINE, max_pixels=64 * 64 - 1)
    with pytest.raises(UnreadableImageError, match=r'training image .*000000\.png too large: '
                                                   r'64 x 64 = 0\.004096 MP exceeds the pixel '
                                                   r'limit of 0\.004095 MP .*skip_unreadable'):
        below[0]
    assert len(decodes_of) == 1  # the refused image was not decoded
    with pytest.raises(ValueError, match='max_pixels must be >= 1, got 0'):
        UnlabeledImageFolder(data_root=root, pipeline=PIPELINE, max_pixels=0)


def test_a_too_large_image_is_skipped_with_its_reason_like_a_corrupt_one(
        folder_with_huge_image, decodes_of):
    root, huge, huge_bytes, truncated = folder_with_huge_image
    dataset = UnlabeledImageFolder(data_root=root, pipeline=PIPELINE, skip_unreadable=True)
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    assert paths[16:] == [huge, truncated]
    sample = dataset[(16, 3)]
    assert sample['data_samples'].img_path == paths[0]  # wrapped round to the first image
    reported = dict(sample['data_samples'].skipped_unreadable)
    assert reported[huge] == HUGE_REASON
    assert reported[truncated].startswith('cannot be decoded')
    assert 'skipped_unreadable' not in dataset[(16, 3)]['data_samples']  # known bad now
    assert huge_bytes not in decodes_of
    strict = UnlabeledImageFolder(data_root=root, pipeline=PIPELINE)
    with pytest.raises(UnreadableImageError, match=f'training image {huge} too large: 30000 x '
                                                   '30000 = 900 MP .*skip_unreadable=True'):
        strict[16]


def test_a_training_run_skips_logs_and_lists_a_too_large_image(tmp_path, folder_with_huge_image,
                                                               decodes_of):
    root, huge, huge_bytes, truncated = folder_with_huge_image
    cfg = Config.fromfile('configs/pretrain/densevit_debug.py')
    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = f'pixel_limit_{next(RUN_IDS)}'  # loggers are found by name
    cfg.visualizer.name = f'visualizer_{cfg.experiment_name}'
    cfg.train_dataloader.batch_size = 6
    cfg.train_dataloader.dataset.update(data_root=root, data_prefix='')
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    cfg.param_scheduler = []
    cfg.log_processor = dict(by_epoch=True)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, by_epoch=True)
    cfg.default_hooks.unreadable_images.max_share = 0.2
    Runner.from_cfg(cfg).train()
    logs = [osp.join(d, f) for d, _, files in os.walk(cfg.work_dir) for f in files
            if f.endswith('.log')]
    text = ''.join(open(p).read() for p in logs)
    assert text.count(f'skipped unreadable training image {huge}: {HUGE_REASON} (') == 1
    assert text.count(f'skipped unreadable training image {truncated}: cannot be decoded') == 1
    listed = (tmp_path / 'work' / 'unreadable_images.txt').read_text().splitlines()
    assert listed[0] == f'{huge}\t{HUGE_REASON}' and listed[1].startswith(f'{truncated}\t')
    assert '2 of 18 training images were unreadable and skipped so far' in text
    assert huge_bytes not in decodes_of


def jpeg_bytes(mode, size, **save):
    import io
    from PIL import Image
    out = io.BytesIO()
    Image.new(mode, size, 'white' if mode != 'CMYK' else (0, 0, 0, 0)).save(out, 'JPEG', **save)
    return out.getvalue()


def test_the_jpeg_header_walk_reads_what_pil_reads():
    """Baseline, progressive, grayscale and CMYK JPEGs, a large EXIF segment before the
    frame header; no size from anything else, or from a JPEG cut before its frame header."""
    import io

    from PIL import Image

    from densevit_mm.datasets.image_check import image_size, jpeg_size
    exif = Image.Exif()
    exif[0x010E] = 'x' * 30000  # ImageDescription: a 30 KB APP1 segment
    cases = [jpeg_bytes('RGB', (640, 480)), jpeg_bytes('RGB', (123, 7), progressive=True),
             jpeg_bytes('L', (33, 4097)), jpeg_bytes('CMYK', (50, 60)),
             jpeg_bytes('RGB', (300, 200), exif=exif.tobytes())]
    for data in cases:
        assert jpeg_size(data) == Image.open(io.BytesIO(data)).size == image_size(data)
    png = io.BytesIO()
    Image.new('RGB', (20, 10)).save(png, 'PNG')
    assert jpeg_size(png.getvalue()) is None and image_size(png.getvalue()) == (20, 10)
    assert jpeg_size(cases[4][:1000]) is None  # cut inside the EXIF segment
    assert jpeg_size(b'\xff\xd8\xff\xda' + bytes(20)) is None
