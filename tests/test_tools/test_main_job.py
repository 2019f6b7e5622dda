"""The README's main job, shortened (--quick): every stage runs and every output has its
contract -- the table's rows and columns, three seeds per cell, the files written."""
import csv
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

COLUMNS = ('mIoU linear (frozen)', 'mIoU k-NN retrieval (no training)',
           'APbox (FCOS, frozen backbone)')
METHODS = ['DenseViT (lambda=0.5)', 'MAE', 'MoCo v3', 'Random init', 'Supervised oracle (labels)']


@pytest.mark.slow
def test_quick_main_job_end_to_end(tmp_path, repo_root):
    result = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools/run_benchmark.py'), '--quick',
         '--work-dir', str(tmp_path / 'work'), '--data-root', str(tmp_path / 'data')],
        capture_output=True, text=True, cwd=repo_root, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # data, 3 pretrainings, the oracle, 2 protocols (linear, fcos) x 5 starts x 3 seeds,
    # 5 retrievals, the report
    assert 'stage 41/41: results' in result.stdout and 'ETA of the whole job' in result.stdout
    assert 'linear oracle seed 2: done in' in result.stdout
    results = tmp_path / 'work' / 'results'
    with open(results / 'results.csv') as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    # exactly the linear probe's, the retrieval's and the box AP's columns, each with its std
    # and n
    assert [c for c in header if c.startswith(('mIoU ', 'APbox ('))] == [
        *COLUMNS, *[f'{c} {s}' for c in COLUMNS for s in ('std', 'n')]]
    measured = [r for r in rows if r['block'] == 'measured']
    assert sorted(r['method'] for r in measured) == METHODS
    for row in measured:
        assert row['data'] == 'built-in (generated)'
        for column in COLUMNS:  # every cell: three seeds, a mean and their spread
            assert row[f'{column} n'] == '3', (row['method'], column)
            assert math.isfinite(float(row[column])) and math.isfinite(float(row[f'{column} std']))
    markdown = (results / 'results.md').read_text()
    for method in METHODS:
        assert f'\n| {method} | ' in markdown
    for column in COLUMNS:
        assert f'\n| {column} | ' in markdown.split('## Calibration')[1]  # its oracle gap
    for picture in ('results.png', 'training_curves.png', 'correspondence_random_init.png',
                    'correspondence_densevit.png', 'correspondence_mocov3.png',
                    'correspondence_mae.png'):
        with open(results / picture, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n', picture
    with open(results / 'diagnostics.json') as f:
        diagnostics = json.load(f)
    assert sorted(diagnostics) == ['densevit', 'mae', 'mocov3', 'random init']
    for value in diagnostics.values():
        assert sorted(value) == ['correspondence_accuracy', 'hub_share', 'rankme']
    assert len(os.listdir(tmp_path / 'work' / 'logs')) == 40  # one per stage but the report
    # every stage, the report included, recorded as done: the same command reuses them
    records = [json.loads(p.read_text()) for p in (tmp_path / 'work' / 'stages').iterdir()]
    assert len(records) == 41 and all('done' in r for r in records)
