"""tools/benchmark_pretrain.py runs and reports ratios (tiny shapes; not a timing test)."""
import json
import os.path as osp
import subprocess
import sys

import pytest


def run_tool(repo_root, out, *args):
    result = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools/benchmark_pretrain.py'), '--device', 'cpu',
         '--reps', '1', '--out', str(out), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out.read_text()), result.stdout


def test_loss_comparison_has_every_path_with_ratios(tmp_path, repo_root):
    report, stdout = run_tool(repo_root, tmp_path / 'bench.json', '--loss-shape', '64', '300',
                              '16', '--chunk-sizes', '64', '--step-chunk', '128',
                              '--batch', '4', '--skip-step')
    assert report['loss_shape'] == [64, 300, 16]
    for term in ('dense', 'global'):
        paths = report['loss'][term]
        assert list(paths) == ['naive', 'chunked 64', 'chunked 128', 'fused']
        assert paths['naive']['time_vs_naive'] == 1
        assert paths['chunked 128']['time_vs_chunked'] == 1
        assert paths['fused']['seconds'] > 0 and paths['fused']['peak_bytes'] >= 0
    assert 'M x K x D = 4 x 300 x 16' in stdout and '| fused |' in stdout


def test_step_comparison_has_the_guarded_step_and_the_parts(tmp_path, repo_root):
    report, stdout = run_tool(repo_root, tmp_path / 'bench.json', '--img-size', '32',
                              '--batch', '2', '--skip-loss')
    step = report['step']
    dense = step['densevit-s (lambda 0.5)']
    assert dense['train_step_seconds'] > 0 and dense['train_step_ratio'] > 0
    assert step['global-only (lambda 0)']['time_ratio'] == 1
    parts = step['parts']['densevit-s (lambda 0.5)']
    assert set(parts) == {'backbone', 'neck', 'correspondence', 'dense loss', 'global loss',
                          'EMA', 'enqueue', 'optimizer', 'rest'}
    assert all(v > 0 for k, v in parts.items() if k != 'rest')
    assert step['parts']['global-only (lambda 0)']['dense loss'] is None
    sums = [sum(v for k, v in step['parts'][name].items() if v is not None and k != 'rest')
            for name in ('densevit-s (lambda 0.5)', 'global-only (lambda 0)')]
    assert step['parts_sum_ratio'] == pytest.approx(sums[0] / sums[1])
    # 2x2 patches, queue 65536: logits and weighted queue sum 2 x 2 x 4 x 65536 x 128, dense MLP
    # 4 passes x 2 x 4 x (384 x 2048 + 2048 x 128); ViT-S 4 passes x 12 layers x 5 tokens
    dense = 2 * 2 * 4 * 65536 * 128 + 4 * 2 * 4 * (384 * 2048 + 2048 * 128)
    vit = 4 * 12 * (2 * 5 * 12 * 384 ** 2 + 4 * 5 * 5 * 384)
    assert step['floor_ratio'] == pytest.approx(1 + dense / vit, rel=1e-12)
    assert 'through train_step + GuardedOptimWrapper' in stdout and '| dense loss |' in stdout


def test_a_path_that_fails_only_in_the_timing_process_is_reported_not_a_key_error(monkeypatch,
                                                                                   repo_root):
    import argparse
    sys.path.insert(0, osp.join(repo_root, 'tools'))
    import benchmark_pretrain

    def fake_run(target, *args):
        if target is benchmark_pretrain._loss_timing_worker:
            return {'naive': 2.0, 'chunked 128': 1.0}  # the fused path dropped out there
        return dict(peak_bytes=10)
    monkeypatch.setattr(benchmark_pretrain, '_run', fake_run)
    args = argparse.Namespace(chunk_sizes=[128], step_chunk=128, no_naive=False)
    report = benchmark_pretrain.measure_losses(args, (4, 8, 2))
    assert report['fused'] == dict(error='failed in the timing process only (it ran alone)')
    assert report['chunked 128']['time_vs_naive'] == 0.5

    monkeypatch.setattr(benchmark_pretrain, '_run', lambda target, *args: dict(
        error='the measuring process died (exit code -9)'))
    with pytest.raises(SystemExit, match='loss timing failed: the measuring process died'):
        benchmark_pretrain.measure_losses(args, (4, 8, 2))
