"""StageRunner: stages in parallel, their logs, the ETA and a failing stage."""
import os
import sys
import time

import pytest

from densevit_mm.benchmark.pipeline import ESTIMATE, Stage, StageRunner


def stage(name, kind, code):
    return Stage(name, kind, [sys.executable, '-c', code])


def test_parallel_stages_run_together_and_keep_their_logs(tmp_path, capsys):
    runner = StageRunner(4, str(tmp_path / 'logs'), jobs=2)
    stages = [stage(f'sleep {i}', 'linear',
                    'import time, os; time.sleep(1.0); '
                    f'print("mIoU: {i}.5", os.environ["OMP_NUM_THREADS"])')
              for i in range(4)]
    start = time.time()
    runner.run(stages, parallel=True, later=[('report', False)])
    assert time.time() - start < 3.6  # two at a time: about 2 s, not 4
    out = capsys.readouterr().out
    for i in range(4):
        assert f'stage {i + 1}/4: sleep {i}' in out
        assert f'sleep {i}: done in 00:01, mIoU {i}.5' in out
    assert sorted(os.listdir(tmp_path / 'logs')) == [f'sleep_{i}.log' for i in range(4)]
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert (tmp_path / 'logs' / 'sleep_0.log').read_text() == f'mIoU: 0.5 {threads}\n'
    assert len(runner.measured['linear']) == 4 and runner.expected('report') == ESTIMATE['report']


def test_the_first_stage_eta_counts_the_later_kinds(tmp_path):
    runner = StageRunner(3, str(tmp_path / 'logs'), jobs=2)
    pending = [Stage('a', 'linear', []), Stage('b', 'linear', [])]
    later = [('fpnfrozen', True), ('fpnfrozen', True), ('report', False)]
    assert runner.eta(pending, 2, later) == (ESTIMATE['linear'] + ESTIMATE['fpnfrozen']
                                             + ESTIMATE['report'])


def test_a_failing_stage_stops_the_job_naming_its_log(tmp_path, capsys):
    runner = StageRunner(1, str(tmp_path / 'logs'))
    with pytest.raises(SystemExit, match=r'stage "broken" failed \(exit 3\); log: .*broken.log'):
        runner.run([stage('broken', 'linear', 'print("the reason"); raise SystemExit(3)')])
    assert 'the reason' in capsys.readouterr().out
