"""tools/benchmark_data.py: what it compares and what it reports (tiny; not a timing test)."""
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


def test_compares_the_two_configs_pipelines_and_decoding():
    cfg = Config.fromfile('configs/pretrain/densevit_s.py')
    device_cfg = Config.fromfile('configs/pretrain/densevit_s_device-photometric.py')
    fns = benchmark_data.pipelines(cfg, device_cfg)
    assert list(fns) == [benchmark_data.PER_IMAGE, benchmark_data.WORKER_PART, 'decode']
    per_image, worker, decode = ([type(t).__name__ for t in fn.transforms] for fn in fns.values())
    assert per_image == worker == ['LoadImageFromFile', 'MultiViewWithGeometry', 'PackInputs']
    assert decode == ['LoadImageFromFile']
    views = [[type(t).__name__ for t in view.transforms]
             for view in (fns[name].transforms[1].pipelines[0]
                          for name in (benchmark_data.PER_IMAGE, benchmark_data.WORKER_PART))]
    assert views == [['RandomResizedCropWithBox', 'RandomApply', 'RandomGrayscale',
                      'GaussianBlur', 'RandomFlip'],
                     ['RandomResizedCropWithBox', 'DeferredPhotometric', 'RandomFlip']]


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
    assert list(variants) == [benchmark_data.PER_IMAGE, benchmark_data.WORKER_PART, 'decode']
    for row in variants.values():
        assert row['cores_per_gpu'] == pytest.approx(rate * row['cpu_ms_per_image'] / 1e3)
    assert variants[benchmark_data.PER_IMAGE]['vs_per_image'] == 1
    assert isinstance(report['worker_share_target_met'], bool)
    assert report['device_part']['device'] == 'cpu' and report['device_part']['ms_per_image'] > 0
    assert f'| {benchmark_data.WORKER_PART} |' in result.stdout
