"""UnlabeledImageFolder and ResumableSampler: every image counted, bad files named or
skipped, one draw one augmentation."""
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler

from densevit_mm.datasets import (ResumableSampler, UnlabeledImageFolder, UnreadableImageError,
                                  draw_seeds)

VIEW = [dict(type='RandomResizedCropWithBox', scale=32, crop_ratio_range=(0.2, 1.),
             backend='pillow'),
        dict(type='RandomApply', prob=0.8,
             transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4,
                              saturation=0.4, hue=0.1)]),
        dict(type='RandomFlip', prob=0.5)]
PIPELINE = [dict(type='LoadImageFromFile'),
            dict(type='MultiViewWithGeometry', num_views=2, transforms=[VIEW]),
            dict(type='PackInputs', algorithm_keys=['view_geometry'])]


def folder(root, **kwargs):
    return UnlabeledImageFolder(data_root=root, pipeline=PIPELINE, **kwargs)


def test_every_image_is_listed_and_counted_webp_included(folder_with_bad_images, mm_log):
    root, good, bad = folder_with_bad_images
    dataset = folder(root)
    assert sorted(dataset.get_data_info(i)['img_path'] for i in range(len(dataset))) == \
        sorted(good + list(bad))
    message, = [m for _, m in mm_log if m.startswith('UnlabeledImageFolder:')]
    assert message == (f'UnlabeledImageFolder: 19 images in {osp.join(root, "")} (3 .jpg, 15 '
                       '.png, 1 .webp); '
                       'extensions taken: .bmp .jpeg .jpg .pgm .png .ppm .tif .tiff .webp; '
                       'other files left out: 1 .txt')


def test_an_unreadable_image_is_named_unless_skipping_is_on(folder_with_bad_images):
    root, _, bad = folder_with_bad_images
    dataset = folder(root)
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    for path in bad:
        with pytest.raises(UnreadableImageError, match=f'training image {path} (empty file|'
                                                       'cannot be decoded).*skip_unreadable'):
            dataset[paths.index(path)]


def test_a_skipped_image_is_replaced_by_the_next_readable_one_and_reported(
        folder_with_bad_images):
    root, _, bad = folder_with_bad_images
    dataset = folder(root, skip_unreadable=True)
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    first_bad = min(paths.index(p) for p in bad)
    # the bad files sort last (class_b/text, truncated, zero): the substitute wraps round
    assert sorted(paths.index(p) for p in bad) == [16, 17, 18] == list(range(first_bad, 19))
    sample = dataset[(first_bad, 7)]
    assert sample['data_samples'].img_path == paths[0]
    reported = sample['data_samples'].skipped_unreadable
    assert [p for p, _ in reported] == paths[first_bad:first_bad + 3]
    assert reported[1][1] == 'empty file (0 bytes)' or 'cannot be decoded' in reported[1][1]
    again = dataset[(first_bad, 7)]  # known bad now: not decoded again, not reported again
    assert 'skipped_unreadable' not in again['data_samples']
    assert torch.equal(again['inputs'][0], sample['inputs'][0])


def test_a_pipeline_error_on_a_good_image_is_not_hidden(folder_with_bad_images):
    root, good, _ = folder_with_bad_images
    broken = PIPELINE[:1] + [dict(type='RandomResizedCropWithBox', scale=32, backend='nope')]
    dataset = UnlabeledImageFolder(data_root=root, pipeline=broken, skip_unreadable=True)
    with pytest.raises(Exception) as info:
        dataset[0]
    assert not isinstance(info.value, UnreadableImageError)


def test_a_folder_of_only_bad_files_fails_with_a_clear_error(tmp_path):
    for i in range(5):
        (tmp_path / f'{i}.jpg').write_text('html error page')
    dataset = folder(str(tmp_path), skip_unreadable=True, max_substitutes=3)
    with pytest.raises(UnreadableImageError, match='4 images in a row from index 0 .* are '
                                                   'unreadable .*tools/check_images.py'):
        dataset[0]


def test_a_draw_seed_fixes_the_augmentation_and_leaves_global_state_alone(
        folder_with_bad_images):
    dataset = folder(folder_with_bad_images[0])
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a, b, c = dataset[(2, 11)], dataset[(2, 11)], dataset[(2, 12)]
    assert np.array_equal(np.random.get_state()[1], state)
    for view in (0, 1):
        assert torch.equal(a['inputs'][view], b['inputs'][view])
    assert not torch.equal(a['inputs'][0], c['inputs'][0])
    np.testing.assert_array_equal(a['data_samples'].view_geometry,
                                  b['data_samples'].view_geometry)


@pytest.mark.parametrize('world', [1, 3])
def test_resumable_sampler_keeps_default_order_and_skips_one_epoch_start(
        folder_with_bad_images, world):
    dataset = folder(folder_with_bad_images[0])
    for rank in range(world):
        ours = ResumableSampler(dataset, seed=5)
        ours.rank, ours.world_size = rank, world  # as on rank `rank` of `world`
        reference = DefaultSampler(dataset, seed=5)
        reference.rank, reference.world_size = rank, world
        for sampler in (ours, reference):
            sampler.num_samples = -(-len(dataset) // world)
            sampler.total_size = sampler.num_samples * world
            sampler.set_epoch(3)
        draws = list(ours)
        assert [i for i, _ in draws] == list(reference)
        assert [s for _, s in draws] == draw_seeds(5, 3, np.array(list(reference))).tolist()
        ours.skip(epoch=3, num_samples=2)
        assert list(ours) == draws[2:] and len(ours) == len(draws) - 2
        ours.set_epoch(4)  # the skip was for epoch 3 only
        assert len(list(ours)) == len(ours) == len(draws)


def test_draw_seeds_differ_between_indices_epochs_and_seeds():
    base = draw_seeds(0, 0, np.arange(1000))
    assert len(set(base.tolist())) == 1000 and base.min() >= 0 and base.max() < 2 ** 32
    assert not np.array_equal(base, draw_seeds(0, 1, np.arange(1000)))
    assert not np.array_equal(base, draw_seeds(1, 0, np.arange(1000)))
    assert np.array_equal(base, draw_seeds(0, 0, np.arange(1000)))


def test_resumable_sampler_refuses_a_dataset_without_draw_seeds():
    with pytest.raises(TypeError, match='ResumableSampler yields \\(index, draw_seed\\) pairs'):
        ResumableSampler(list(range(4)), seed=0)


def test_check_images_lists_exactly_the_unreadable_files(folder_with_bad_images, tmp_path,
                                                         repo_root):
    root, _, bad = folder_with_bad_images
    out = tmp_path / 'bad.txt'
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/check_images.py'), root,
                             '--workers', '2', '--out', str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert '3 of 19 images unreadable' in result.stdout
    listed = dict(line.split('\t') for line in out.read_text().splitlines())
    assert sorted(listed) == sorted(bad)
    assert listed[next(p for p, k in bad.items() if k == 'empty')] == 'empty file (0 bytes)'
