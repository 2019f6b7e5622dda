"""tools/benchmark_guarded_step.py: both steps run through MMDistributedDataParallel on two
CPU processes (toy size; not a timing test)."""
import json
import os.path as osp
import subprocess
import sys


def test_plain_and_guarded_ddp_steps_run_side_by_side(tmp_path, repo_root):
    out = tmp_path / 'guarded.json'
    result = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools/benchmark_guarded_step.py'), '--img-size',
         '32', '--batch', '2', '--reps', '2', '--out', str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report['procs'] == 2 and report['reps'] == 2
    for name in ('plain', 'guarded'):
        low, high = report['spread'][name]
        assert 0 < low <= report['seconds'][name] <= high
    assert 'guarded / plain:' in result.stdout
