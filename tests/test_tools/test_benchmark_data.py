"""tools/benchmark_data.py: what it removes and what it reports (tiny; not a timing test)."""
import json
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from densevit_mm.benchmark.flops import dense_branch_flops, vit_s_train_flops

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                            'tools'))
import benchmark_data  # noqa: E402


def test_geometric_part_drops_exactly_the_photometric_transforms():
    pipeline = Config.fromfile('configs/pretrain/densevit_s.py').train_dataloader.dataset.pipeline
    kept = benchmark_data._without_photometric(pipeline)
    assert [t['type'] for t in kept] == ['LoadImageFromFile', 'MultiViewWithGeometry',
                                         'PackInputs']
    views = kept[1]['transforms']
    assert [[t['type'] for t in v] for v in views] == [['RandomResizedCropWithBox',
                                                         'RandomFlip']]
    # the config itself is left as it was
    assert len(pipeline[1]['transforms'][0]) == 5


def test_generated_jpegs_are_photo_sized(tmp_path):
    from PIL import Image
    paths = benchmark_data.write_jpegs(str(tmp_path), 2)
    with Image.open(paths[0]) as img:
        assert img.size == (500, 375) and img.format == 'JPEG'


def test_reports_cores_per_gpu(tmp_path, repo_root):
    out = tmp_path / 'data.json'
    result = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools/benchmark_data.py'), '--num-images', '3',
         '--rounds', '1', '--out', str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    rate = 0.35 * 790e12 / (vit_s_train_flops(224) + dense_branch_flops(224))
    assert report['step_images_per_s'] == pytest.approx(rate)
    variants = report['variants']
    assert list(variants) == ['full', 'geometric part', 'decode']
    for row in variants.values():
        assert row['cores_per_gpu'] == pytest.approx(rate * row['cpu_ms_per_image'] / 1e3)
    assert variants['full']['vs_full'] == 1
    assert '| geometric part |' in result.stdout
