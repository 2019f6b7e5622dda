"""tools/benchmark_pretrain.py runs and reports ratios (tiny shapes; not a timing test)."""
import json
import os.path as osp
import subprocess
import sys


def test_loss_comparison_writes_ratios(tmp_path, repo_root):
    out = tmp_path / 'bench.json'
    result = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools/benchmark_pretrain.py'), '--device', 'cpu',
         '--loss-shape', '64', '300', '16', '--chunk-sizes', '64', '--reps', '1',
         '--skip-step', '--out', str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report['loss_shape'] == [64, 300, 16]
    lean = report['loss']['chunk_64']
    assert lean['seconds'] > 0 and lean['time_ratio'] > 0
    assert '| chunked 64 |' in result.stdout


def test_step_comparison_includes_the_guarded_train_step(tmp_path, repo_root):
    out = tmp_path / 'bench.json'
    result = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools/benchmark_pretrain.py'), '--device', 'cpu',
         '--img-size', '32', '--batch', '2', '--reps', '1', '--skip-loss', '--out', str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    step = json.loads(out.read_text())['step']
    dense = step['densevit-s (lambda 0.5)']
    assert dense['train_step_seconds'] > 0 and dense['train_step_ratio'] > 0
    assert step['global-only (lambda 0)']['time_ratio'] == 1
    assert 'through train_step + GuardedOptimWrapper' in result.stdout
