"""tools/make_shards.py and UnlabeledImageShards against the folder they were made from."""
import hashlib
import json
import os
import os.path as osp
import tarfile

import numpy as np
import pytest
import torch
from mmengine.config import Config

from densevit_mm.datasets import (ShardError, UnlabeledImageFolder, UnlabeledImageShards,
                                  UnreadableImageError)
from tests.conftest import load_tool

make_shards = load_tool('make_shards')
PIPELINE = Config.fromfile('configs/pretrain/densevit_s.py').train_dataloader.dataset.pipeline


def small_pipeline():
    """The default pretraining pipeline with 32-pixel views (the crops draw the same)."""
    pipeline = Config.fromfile('configs/pretrain/densevit_s.py').train_dataloader.dataset.pipeline
    for view in pipeline[1]['transforms']:
        view[0]['scale'] = 32
    return pipeline


@pytest.fixture
def shards(folder_with_bad_images, tmp_path):
    """The folder of conftest (16 good images, 3 bad ones, in class folders) in shards of
    at most 64 KB; returns (folder, shard dir)."""
    root = folder_with_bad_images[0]
    out = str(tmp_path / 'shards')
    assert make_shards.main([root, out, '--shard-size', '64KB']) == 0
    return root, out


def test_shards_are_plain_tars_of_the_files_in_the_folders_order(shards):
    root, out = shards
    folder = UnlabeledImageFolder(data_root=root, pipeline=[])
    index = json.load(open(osp.join(out, 'index.json')))
    names = [osp.relpath(folder.get_data_info(i)['img_path'], root) for i in range(len(folder))]
    assert index['images']['name'] == names and len(names) == 19
    assert len(index['shards']) > 2
    members = []
    for shard in index['shards']:
        path = osp.join(out, shard['name'])
        assert osp.getsize(path) == shard['bytes']
        assert shard['bytes'] <= 64000 or shard['images'] == 1
        with tarfile.open(path) as tar:  # what WebDataset and tar read
            members += [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    assert [name for name, _ in members] == names
    for (name, data), offset, size, k in zip(members, index['images']['offset'],
                                             index['images']['size'], index['images']['shard']):
        assert data == open(osp.join(root, name), 'rb').read() and size == len(data)
        with open(osp.join(out, index['shards'][k]['name']), 'rb') as f:
            f.seek(offset)
            assert f.read(size) == data


def test_make_shards_refuses_a_folder_that_holds_shards_and_reads_sizes(shards, capsys):
    with pytest.raises(SystemExit):
        make_shards.main([shards[0], shards[1]])
    assert 'already holds shards' in capsys.readouterr().err
    assert make_shards.parse_size('1GB') == 10 ** 9
    assert make_shards.parse_size('1.5 mb') == 1500000 and make_shards.parse_size('4096') == 4096


def test_the_shard_reader_equals_the_folder_reader(shards):
    """The same images, order, draws and pixels, the unreadable ones skipped alike."""
    root, out = shards
    options = dict(pipeline=small_pipeline(), skip_unreadable=True)
    folder = UnlabeledImageFolder(data_root=root, **options)
    sharded = UnlabeledImageShards(data_root=out, **options)
    assert len(sharded) == len(folder) == 19
    for i in range(len(folder)):
        a, b = folder[(i, 1000 + i)], sharded[(i, 1000 + i)]
        assert torch.equal(a['inputs'], b['inputs'])
        sa, sb = a['data_samples'], b['data_samples']
        np.testing.assert_array_equal(sa.view_geometry, sb.view_geometry)
        np.testing.assert_array_equal(sa.view_photometric, sb.view_photometric)
        skipped_a = [(osp.relpath(p, root), why) for p, why in sa.get('skipped_unreadable', [])]
        skipped_b = [(p.split('.tar/', 1)[1], why) for p, why in sb.get('skipped_unreadable', [])]
        assert skipped_a == skipped_b


def test_a_damaged_member_is_skipped_and_named_or_refused(shards):
    root, out = shards
    index = json.load(open(osp.join(out, 'index.json')))
    k = index['images']['name'].index('class_a/000003.png')
    shard = index['shards'][index['images']['shard'][k]]['name']
    with open(osp.join(out, shard), 'r+b') as f:  # garbage over the member's data
        f.seek(index['images']['offset'][k])
        f.write(b'\0' * index['images']['size'][k])
    name = f'{out}/{shard}/class_a/000003.png'
    sharded = UnlabeledImageShards(data_root=out, pipeline=small_pipeline(), skip_unreadable=True)
    sample = sharded[(k, 7)]
    assert [p for p, _ in sample['data_samples'].skipped_unreadable] == [name]
    assert 'cannot be decoded' in sample['data_samples'].skipped_unreadable[0][1]
    strict = UnlabeledImageShards(data_root=out, pipeline=small_pipeline())
    with pytest.raises(UnreadableImageError, match=f'training image {name} cannot be decoded'):
        strict[(k, 7)]


def test_a_truncated_or_missing_shard_is_refused_naming_it(shards):
    out = shards[1]
    index = json.load(open(osp.join(out, 'index.json')))
    path = osp.join(out, index['shards'][1]['name'])
    with open(path, 'r+b') as f:
        f.truncate(1000)
    with pytest.raises(ShardError, match=f'shard {path} has 1000 bytes, its index says '
                                         f'{index["shards"][1]["bytes"]}: it is truncated'):
        UnlabeledImageShards(data_root=out, pipeline=small_pipeline())
    os.remove(path)
    with pytest.raises(ShardError, match=f'shard {path} is missing'):
        UnlabeledImageShards(data_root=out, pipeline=small_pipeline())
    with pytest.raises(ShardError, match='has no index.json'):
        UnlabeledImageShards(data_root=shards[0], pipeline=small_pipeline())


def test_staging_copies_once_and_reads_the_local_copies(shards, tmp_path, mm_log):
    root, out = shards
    local = str(tmp_path / 'local')
    first = UnlabeledImageShards(data_root=out, stage_to=local, pipeline=small_pipeline())
    index = json.load(open(osp.join(out, 'index.json')))
    staged, = os.listdir(local)  # a folder named by the index's hash
    assert staged == hashlib.sha1(open(osp.join(out, 'index.json'), 'rb').read()).hexdigest()[:16]
    copies = [osp.join(local, staged, s['name']) for s in index['shards']]
    assert all(osp.getsize(c) == s['bytes'] for c, s in zip(copies, index['shards']))
    assert any('staged 0.00 GB of shards' in text for _, text in mm_log)
    mtimes = [os.stat(c).st_mtime_ns for c in copies]
    second = UnlabeledImageShards(data_root=out, stage_to=local, pipeline=small_pipeline())
    assert [os.stat(c).st_mtime_ns for c in copies] == mtimes  # nothing copied again
    os.rename(out, out + '_moved')  # reads go to the local copies
    assert torch.equal(first[(2, 5)]['inputs'], second[(2, 5)]['inputs'])
    assert first.get_data_info(2)['img_path'].startswith(out)  # named as in the shard folder


def test_a_shard_cut_after_the_start_is_named_and_descriptors_stay_bounded(shards,
                                                                        monkeypatch):
    out = shards[1]
    sharded = UnlabeledImageShards(data_root=out, pipeline=small_pipeline())
    monkeypatch.setattr(sharded, 'open_shards', 2)
    for i in range(len(sharded)):
        sharded._bytes = (None, None, b'')
        sharded._read(i)
        assert len(sharded._files) <= 2
    index = json.load(open(osp.join(out, 'index.json')))
    images = index['images']
    k = next(i for i, name in enumerate(images['name']) if name.endswith('.png')
             and images['shard'][i] == images['shard'][-1])  # a good image of the last shard
    last = osp.join(out, index['shards'][images['shard'][k]]['name'])
    with open(last, 'r+b') as f:
        f.truncate(images['offset'][k] + 10)
    sharded._bytes = (None, None, b'')
    with pytest.raises(ShardError, match=f'{last} ends before .*{images["name"][k]} \\(10 of '
                                         'its .* the shard was truncated after the run started'):
        sharded[(k, 0)]


def test_a_pipeline_that_does_not_start_with_the_loader_is_refused(shards):
    with pytest.raises(ValueError, match='must start with LoadImageFromFile'):
        UnlabeledImageShards(data_root=shards[1], pipeline=small_pipeline()[1:])
    with pytest.raises(TypeError, match='takes no data_prefix'):
        UnlabeledImageShards(data_root=shards[1], data_prefix='train', pipeline=[])
