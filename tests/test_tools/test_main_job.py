"""The README's main job, shortened (--quick): every stage runs and the table is complete."""
import csv
import json
import os.path as osp
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_main_job_end_to_end(tmp_path, repo_root):
    result = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools/run_benchmark.py'), '--quick',
         '--work-dir', str(tmp_path / 'work'), '--data-root', str(tmp_path / 'data')],
        capture_output=True, text=True, cwd=repo_root, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert 'stage 13/13: results' in result.stdout and 'ETA of the whole job' in result.stdout
    results = tmp_path / 'work' / 'results'
    with open(results / 'results.csv') as f:
        measured = [r for r in csv.DictReader(f) if r['block'] == 'measured']
    assert sorted(r['method'] for r in measured) == [
        'DenseViT (lambda=0.5)', 'Global-only contrastive (lambda=0)', 'Random init']
    for row in measured:
        assert row['data'] == 'built-in (generated)'
        for metric in ('mIoU', 'mIoU frozen', 'APbox', 'APmask'):
            assert 0 <= float(row[metric]) <= 100
    for picture in ('results.png', 'training_curves.png', 'correspondence_random_init.png',
                    'correspondence_densevit.png'):
        assert (results / picture).stat().st_size > 1000
    with open(results / 'diagnostics.json') as f:
        diagnostics = json.load(f)
    assert sorted(diagnostics) == ['densevit', 'globalonly', 'random init']
    for value in diagnostics.values():
        assert 0 <= value['correspondence_accuracy'] <= 1 and 1 <= value['rankme'] <= 192
