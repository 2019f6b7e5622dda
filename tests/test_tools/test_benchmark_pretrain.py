"""tools/benchmark_pretrain.py: its ratios and tables from known timings, the profiler ranges
of a real step, and one in-process run of each section (tiny shapes; not a timing test)."""
import json
import queue
import sys
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

from densevit_mm.models.losses import MemoryQueue
from tests.conftest import load_tool

bp = load_tool('benchmark_pretrain')
MB = 2 ** 20


def test_loss_report_ratios_and_table_from_known_timings():
    seconds = {'naive': 4.0, 'chunked 64': 2.0, 'chunked 128': 1.0}  # fused: timing failed
    peaks = {'naive': dict(peak_bytes=400 * MB), 'chunked 64': dict(peak_bytes=100 * MB),
             'chunked 128': dict(peak_bytes=50 * MB), 'fused': dict(peak_bytes=10)}
    report = bp.loss_report(seconds, peaks, step_chunk=128)
    assert report['fused'] == dict(error='failed in the timing process only (it ran alone)')
    assert report['chunked 64'] == dict(peak_bytes=100 * MB, seconds=2.0, time_vs_naive=0.5,
                                        memory_vs_naive=0.25, time_vs_chunked=2.0)
    assert bp.loss_lines('dense', report, 128) == [
        'dense',
        '| path | peak memory (MB) | time (s) | time vs chunked 128 | time vs naive | '
        'memory vs naive |',
        '|---|---|---|---|---|---|',
        '| naive | 400 | 4.0000 | 4.00 | 1.00 | 1.000 |',
        '| chunked 64 | 100 | 2.0000 | 2.00 | 0.50 | 0.250 |',
        '| chunked 128 | 50 | 1.0000 | 1.00 | 0.25 | 0.125 |',
        '| fused | failed in the timing process only (it ran alone) | | | | |']
    # without the naive path its ratios are left out, not made up
    report = bp.loss_report({'chunked 128': 1.0}, {'chunked 128': dict(peak_bytes=0)}, 128)
    assert report['chunked 128'] == dict(peak_bytes=0, seconds=1.0, time_vs_chunked=1.0)
    assert bp.loss_lines('t', report, 128)[-1] == '| chunked 128 | 0 | 1.0000 | 1.00 | nan | nan |'


def known_parts(**ranges):
    parts = dict.fromkeys(bp.PARTS, None)
    parts.update(ranges)
    return parts


def test_step_report_ratios_and_tables_from_known_timings():
    seconds = {bp.DENSE: 1.5, bp.GLOBAL: 1.2, 'train_step': 1.65}
    peaks = {bp.DENSE: dict(peak_bytes=300 * MB), bp.GLOBAL: dict(peak_bytes=200 * MB),
             'mmpretrain MoCoV3 ViT-S': dict(error='KeyError: no MoCoV3 here')}
    parts = {bp.DENSE: dict(known_parts(backbone=0.5, **{'dense loss': 0.3, 'backward': 0.6}),
                            step=1.5),
             bp.GLOBAL: dict(known_parts(backbone=0.5, backward=0.5), step=1.1)}
    report = bp.step_report(seconds, peaks, parts, batch=6, img_size=32)
    dense = report[bp.DENSE]
    assert dense['time_ratio'] == 1.25 and dense['images_per_s'] == 4.
    assert dense['train_step_ratio'] == pytest.approx(1.1)
    assert report[bp.GLOBAL]['time_ratio'] == 1.
    assert report['parts'][bp.DENSE]['rest'] == pytest.approx(0.1)
    assert report['parts'][bp.GLOBAL]['rest'] == pytest.approx(0.1)
    assert report['parts'][bp.GLOBAL]['dense loss'] is None
    assert report['parts_sum_ratio'] == pytest.approx(1.4 / 1.0)
    # 2x2 patches, queue 65536: logits and weighted queue sum 2 x 2 x 4 x 65536 x 128, dense MLP
    # 4 passes x 2 x 4 x (384 x 2048 + 2048 x 128); ViT-S 4 passes x 12 layers x 5 tokens
    dense_flops = 2 * 2 * 4 * 65536 * 128 + 4 * 2 * 4 * (384 * 2048 + 2048 * 128)
    vit = 4 * 12 * (2 * 5 * 12 * 384 ** 2 + 4 * 5 * 5 * 384)
    assert report['floor_ratio'] == pytest.approx(1 + dense_flops / vit, rel=1e-12)
    lines = bp.step_lines(report, 6, 32, 'auto', compute_fraction=False)
    assert lines[1:6] == [
        '| model | time (s) | images/s | peak memory (MB) | time vs global-only |',
        '|---|---|---|---|---|',
        '| densevit-s (lambda 0.5) | 1.500 | 4.0 | 300 | 1.250 |',
        '| global-only (lambda 0) | 1.200 | 5.0 | 200 | 1.000 |',
        '| mmpretrain MoCoV3 ViT-S | did not run: KeyError: no MoCoV3 here | | | |']
    assert lines[7] == ('DenseViT-S step through train_step + GuardedOptimWrapper: 1.650 s, '
                        '1.100x the plain step')
    table = lines[lines.index('| part | densevit-s | global-only | difference | share of the '
                              'difference |') + 2:]
    assert table[0] == '| backbone | 0.5000 | 0.5000 | +0.0000 | +0% |'
    assert '| dense loss | 0.3000 | 0.0000 | +0.3000 | +75% |' in table
    assert '| backward | 0.6000 | 0.5000 | +0.1000 | +25% |' in table
    assert table[-2:] == ['| profiled step | 1.5000 | 1.1000 | +0.4000 | |',
                          'sum of the parts, densevit-s vs global-only: 1.400x']
    # the compute fraction of the bf16 limit: FLOPs per image x images/s / 790 TFLOP/s
    lines = bp.step_lines(report, 6, 32, 'auto', compute_fraction=True)
    assert lines[3].endswith(' 1.250 | 0.000 |')
    assert dense['compute_fraction'] == pytest.approx((vit + dense_flops) * 4. / 790e12)


def test_range_seconds_sums_each_range_per_step():
    events = [SimpleNamespace(key='backbone', cpu_time_total=3e6, device_time_total=0),
              SimpleNamespace(key='aten::mm', cpu_time_total=9e6, device_time_total=0),
              SimpleNamespace(key='step', cpu_time_total=8e6, device_time_total=4e6),
              SimpleNamespace(key='step', cpu_time_total=2e6, device_time_total=2e6)]
    assert bp.range_seconds(events, ('backbone', 'neck', 'step'), 2, 'cpu') == dict(
        backbone=1.5, neck=None, step=5.)
    assert bp.range_seconds(events, ('step',), 2, 'cuda') == dict(step=3.)  # kernels' time


@pytest.mark.parametrize('dense', [True, False])
def test_the_profiler_finds_every_range_of_a_real_step(dense):
    cfg = Config.fromfile('configs/pretrain/densevit_debug.py')
    if not dense:
        cfg.model.update(loss_lambda=0.)
        cfg.model.neck.dense_out_channels = None
        cfg.model.head.loss_dense = None
    model = MODELS.build(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters())
    views = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    queues = [m for m in model.modules() if isinstance(m, MemoryQueue)]

    def step():  # as _step_setup's, on the debug model
        for q in queues:
            q.stage()
        loss = sum(v for k, v in model.loss(views, None).items() if k.startswith('loss'))
        with bp.record_function('backward'):
            loss.backward()
        with bp.record_function('optimizer'):
            optimizer.step()
        with bp.record_function('enqueue'):
            for q in queues:
                q.commit(all_finite=True)
    step()
    bp._loss_ranges(model)
    parts = bp.profile_parts(step, 'cpu', steps=1)
    missing = {p for p, v in parts.items() if v is None}
    assert missing == (set() if dense else {'correspondence', 'dense loss'})
    assert 0 < sum(v for k, v in parts.items() if v is not None and k != 'step') <= parts['step']


def in_process_run(target, *args):
    """``_run`` without the fresh process: the worker reports into a plain queue."""
    reported = queue.Queue()
    target(*args, reported)
    return reported.get_nowait()


def test_main_writes_both_sections(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bp, '_run', in_process_run)
    out = tmp_path / 'bench.json'
    monkeypatch.setattr(sys, 'argv', [
        'benchmark_pretrain.py', '--device', 'cpu', '--reps', '1', '--loss-shape', '64', '300',
        '16', '--chunk-sizes', '64', '--step-chunk', '128', '--batch', '2', '--img-size', '32',
        '--out', str(out)])
    bp.main()
    report = json.loads(out.read_text())
    assert report['loss_shape'] == [64, 300, 16]
    for term in ('dense', 'global'):
        paths = report['loss'][term]
        assert list(paths) == ['naive', 'chunked 64', 'chunked 128', 'fused']
        assert paths['naive']['time_vs_naive'] == 1 and paths['chunked 128']['time_vs_chunked'] == 1
    step = report['step']
    assert set(step[bp.DENSE]) == {'peak_bytes', 'seconds', 'images_per_s', 'time_ratio',
                                   'train_step_seconds', 'train_step_ratio'}
    assert set(step['parts'][bp.DENSE]) == set(bp.PARTS) | {'rest'}
    assert None not in step['parts'][bp.DENSE].values()
    stdout = capsys.readouterr().out
    assert 'M x K x D = 2 x 300 x 16' in stdout and '| fused |' in stdout
    assert 'Times are in' in stdout  # Compare's table
    assert 'through train_step + GuardedOptimWrapper' in stdout and '| dense loss |' in stdout
