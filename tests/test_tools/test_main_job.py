"""The README's main job, shortened (--quick): every stage runs and the table is complete."""
import csv
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

COLUMNS = ('mIoU linear (frozen)', 'mIoU FPN (frozen backbone)')


@pytest.mark.slow
def test_quick_main_job_end_to_end(tmp_path, repo_root):
    result = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools/run_benchmark.py'), '--quick',
         '--work-dir', str(tmp_path / 'work'), '--data-root', str(tmp_path / 'data')],
        capture_output=True, text=True, cwd=repo_root, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # data, 2 pretrainings, the oracle, 2 protocols x 4 starts x 3 seeds, the report
    assert 'stage 29/29: results' in result.stdout and 'ETA of the whole job' in result.stdout
    assert 'linear oracle seed 2: done in' in result.stdout
    results = tmp_path / 'work' / 'results'
    with open(results / 'results.csv') as f:
        measured = [r for r in csv.DictReader(f) if r['block'] == 'measured']
    assert sorted(r['method'] for r in measured) == [
        'DenseViT (lambda=0.5)', 'Global-only contrastive (lambda=0)', 'Random init',
        'Supervised oracle (labels)']
    for row in measured:
        assert row['data'] == 'built-in (generated)'
        for column in COLUMNS:
            assert 0 <= float(row[column]) <= 100 and row[f'{column} n'] == '3'
            assert float(row[f'{column} std']) >= 0
    markdown = (results / 'results.md').read_text()
    for column in COLUMNS:
        assert f'\n| {column} | ' in markdown.split('## Calibration')[1]  # its oracle gap
    for picture in ('results.png', 'training_curves.png', 'correspondence_random_init.png',
                    'correspondence_densevit.png'):
        assert (results / picture).stat().st_size > 1000
    with open(results / 'diagnostics.json') as f:
        diagnostics = json.load(f)
    assert sorted(diagnostics) == ['densevit', 'globalonly', 'random init']
    for value in diagnostics.values():
        assert 0 <= value['correspondence_accuracy'] <= 1 and 1 <= value['rankme'] <= 192
        assert 1 / 36 <= value['hub_share'] <= 1
    assert len(os.listdir(tmp_path / 'work' / 'logs')) == 28  # one per stage but the report
