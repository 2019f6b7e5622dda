"""tools/benchmark_data.py: what it compares and what it reports (tiny; not a timing test)."""
import json
import os
import sys

import pytest

from densevit_mm.datasets import UnlabeledImageFolder, UnlabeledImageShards, write_shards
from tests.conftest import load_tool

benchmark_data = load_tool('benchmark_data')
DEFAULT, DECODE = benchmark_data.DEFAULT, benchmark_data.DECODE


def test_every_data_path_from_files_and_shards_and_the_decode(tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    names = [os.path.basename(p) for p in benchmark_data.write_jpegs(str(folder), 3)]
    write_shards(str(folder), names, str(tmp_path / 'shards'))
    sets = benchmark_data.training_sets(str(folder), str(tmp_path / 'shards'))
    assert list(sets) == [f'{path}, {source}' for path in benchmark_data.PATHS
                          for source in ('files', 'shards')] + [DECODE]
    views = {}
    for name, (dataset, collate, cfg) in sets.items():
        if name == DECODE:
            continue
        assert type(dataset) is (UnlabeledImageFolder if name.endswith('files')
                                 else UnlabeledImageShards)
        assert len(dataset) == 3
        assert collate.__name__ == cfg.train_dataloader.collate_fn.type
        views[name] = [type(t).__name__
                       for t in dataset.pipeline.transforms[0].transforms[0].transforms]
    assert views['worker augment, files'] == ['RandomResizedCropWithBox', 'RandomApply',
                                              'RandomGrayscale', 'GaussianBlur', 'RandomFlip']
    assert views['device photometric, shards'] == ['RandomResizedCropWithBox',
                                                   'DeferredPhotometric', 'RandomFlip']
    assert views[DEFAULT] == ['DeferredResizedCrop', 'DeferredPhotometric', 'RandomFlip']
    decode = sets[DECODE][0]
    assert decode[(2, 0)] == 375  # read and decoded: the image's height


def test_generated_jpegs_are_photo_sized_and_reproducible(tmp_path):
    from PIL import Image
    (tmp_path / 'again').mkdir()
    paths = benchmark_data.write_jpegs(str(tmp_path), 2)
    again = benchmark_data.write_jpegs(str(tmp_path / 'again'), 2)
    assert [p.rsplit('/', 1)[1] for p in paths] == ['00000.jpg', '00001.jpg']
    with Image.open(paths[0]) as img:
        assert img.size == (500, 375) and img.format == 'JPEG'
    assert open(paths[1], 'rb').read() == open(again[1], 'rb').read()  # same seed, same bytes
    assert open(paths[0], 'rb').read() != open(paths[1], 'rb').read()


def test_default_step_rate_is_35_percent_of_the_h200_on_densevit_s_flops():
    # 36.33 GFLOP (ViT-S training, both views) + 8.22 GFLOP (dense branch) per image:
    # 0.35 * 790e12 / 44.5464e9 = 6207.0 images/s (docs/benchmarks.md: "6,200")
    rate, source = benchmark_data.step_rate()
    assert rate == pytest.approx(6207.011, abs=1e-3)
    assert source == '35% of 790 TFLOP/s at 44.5 GFLOP per DenseViT-S image'
    assert benchmark_data.step_rate(1000.) == (1000., 'given')


def test_rows_and_printed_table_for_known_timings():
    ms = {'worker augment, files': 10.0, DEFAULT: 1.6, DECODE: 1.0}
    rows = benchmark_data.variant_rows(ms, rate=2000.)
    assert rows[DEFAULT] == dict(cpu_ms_per_image=1.6, images_per_s_per_core=625.,
                                 vs_decode=1.6, cores_per_gpu=3.2)
    assert benchmark_data.report_lines(rows) == [
        '| data path | CPU ms / image | images/s per core | vs decode | cores per GPU |',
        '|---|---|---|---|---|',
        '| worker augment, files | 10.00 | 100 | 10.00 | 20.0 |',
        f'| {DEFAULT} | 1.60 | 625 | 1.60 | 3.2 |',
        f'| {DECODE} | 1.00 | 1000 | 1.00 | 2.0 |',
        'the default data path costs 1.60 decodes per image (target <= 2.0: met)']
    rows = benchmark_data.variant_rows({DEFAULT: 2.1, DECODE: 1.0}, rate=2000.)
    assert benchmark_data.report_lines(rows)[-1].endswith('2.10 decodes per image (target '
                                                          '<= 2.0: not met)')


@pytest.mark.slow
def test_main_measures_every_path_in_worker_processes_and_writes_the_report(tmp_path,
                                                                           repo_root):
    """In a fresh process, as users run it: data loader workers forked from this test
    process, where earlier tests loaded faiss's OpenMP and OpenBLAS, can hang at start."""
    import subprocess
    out = tmp_path / 'data.json'
    result = subprocess.run(
        [sys.executable, os.path.join(repo_root, 'tools/benchmark_data.py'), '--num-images',
         '4', '--rounds', '1', '--batch', '2', '--step-images-per-s', '1000', '--out',
         str(out)], capture_output=True, text=True, timeout=600, cwd=repo_root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report['images'] == '4 generated 500x375'
    assert report['step_images_per_s'] == 1000. and report['rate_source'] == 'given'
    assert len(report['variants']) == 7
    for row in report['variants'].values():
        assert row['cpu_ms_per_image'] > 0 and row['cores_per_gpu'] == pytest.approx(
            row['cpu_ms_per_image'])
    assert sorted(report['device_part']['ms_per_image']) == ['device photometric',
                                                             'device views (default)']
    assert f'| {DEFAULT} |' in result.stdout
