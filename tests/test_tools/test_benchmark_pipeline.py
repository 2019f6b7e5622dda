"""StageRunner: stages in parallel, their logs, the ETA and a failing stage; a job run again
(records, reuse, resume) and a job stopped by a signal (its stages stop with it)."""
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import load_tool

stages_tool = load_tool('benchmark_stages')  # tools/benchmark_stages.py
ESTIMATE, Stage, StageRunner, fmt = (stages_tool.ESTIMATE, stages_tool.Stage,
                                     stages_tool.StageRunner, stages_tool.fmt)


def stage(name, kind, code):
    return Stage(name, kind, [sys.executable, '-c', code])


# stage i of a pair: waits (up to 20 s) for its partner to start, says whether it saw it and
# how many stages had ended when it started
PAIRED = """
import os, sys, time
tmp, i = sys.argv[1], int(sys.argv[2])
ended = sum(os.path.exists(f"{tmp}/ended_{j}") for j in range(4))
open(f"{tmp}/started_{i}", "w").close()
deadline = time.time() + 20
while not os.path.exists(f"{tmp}/started_{i ^ 1}") and time.time() < deadline:
    time.sleep(0.02)
together = os.path.exists(f"{tmp}/started_{i ^ 1}")
open(f"{tmp}/ended_{i}", "w").close()
print(f"mIoU: {i}.5", os.environ["OMP_NUM_THREADS"], together, ended)
"""


def test_parallel_stages_run_together_and_keep_their_logs(tmp_path, capsys):
    runner = StageRunner(4, str(tmp_path / 'logs'), jobs=2)
    stages = [Stage(f'pair {i}', 'linear', [sys.executable, '-c', PAIRED, str(tmp_path), str(i)])
              for i in range(4)]
    runner.run(stages, parallel=True, later=[('report', False)])
    out = capsys.readouterr().out
    for i in range(4):
        assert f'stage {i + 1}/4: pair {i}' in out
        assert re.search(rf'pair {i}: done in 00:\d\d, mIoU {i}\.5', out)
    assert sorted(os.listdir(tmp_path / 'logs')) == [f'pair_{i}.log' for i in range(4)]
    threads = max(1, (os.cpu_count() or 1) // 2)
    logs = [(tmp_path / 'logs' / f'pair_{i}.log').read_text().split() for i in range(4)]
    assert [log[:4] for log in logs] == [['mIoU:', f'{i}.5', str(threads), 'True']
                                         for i in range(4)]  # each pair ran together
    # two at a time: stage 2 took the slot of 0 or 1, stage 3 the slot of another one
    ended = [int(log[4]) for log in logs]
    assert ended[:2] == [0, 0] and ended[2] >= 1 and ended[3] >= 2
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



# ----- a job run again: records, reuse, resume ----------------------------------------------

# appends its arguments to the file argv[1], one line a run; "die-once": SIGKILL on its first
COUNTED = """
import os, sys
first = not os.path.exists(sys.argv[1])
with open(sys.argv[1], "a") as f:
    f.write(" ".join(sys.argv[2:]) + "\\n")
if first and "die-once" in sys.argv:
    os.kill(os.getpid(), 9)
"""


def counted(tmp_path, name, *extra, kind='linear', **fields):
    return Stage(name, kind, [sys.executable, '-c', COUNTED, str(tmp_path / f'{name}.count'),
                              *extra], **fields)


def runs(tmp_path, name):
    path = tmp_path / f'{name}.count'
    return path.read_text().splitlines() if path.exists() else []


def runner_at(tmp_path, total, **kwargs):
    return StageRunner(total, str(tmp_path / 'logs'), record_dir=str(tmp_path / 'stages'),
                       **kwargs)


def test_a_rerun_reuses_done_stages_and_reruns_the_rest(tmp_path, capsys):
    read, made = tmp_path / 'read.txt', tmp_path / 'made.txt'
    read.write_text('v1')
    made.write_text('what e leaves')
    stages = [counted(tmp_path, 'a'), counted(tmp_path, 'b'), counted(tmp_path, 'c', 'x=1'),
              counted(tmp_path, 'd', inputs=[str(read)]),
              counted(tmp_path, 'e', outputs=[str(made)])]
    runner_at(tmp_path, 5).run(stages)
    assert [runs(tmp_path, s.name) for s in stages] == [[''], [''], ['x=1'], [''], ['']]
    capsys.readouterr()

    os.remove(tmp_path / 'stages' / 'b.json')
    stages[2] = counted(tmp_path, 'c', 'x=2')
    read.write_text('v2, longer')
    made.unlink()
    runner_at(tmp_path, 5).run(stages)
    assert [runs(tmp_path, s.name) for s in stages] == [
        [''], ['', ''], ['x=1', 'x=2'], ['', ''], ['', '']]
    out = capsys.readouterr().out
    assert f'stage 1/5: reusing a: done on {time.strftime("%Y-%m-%d")}' in out
    assert 'stage 2/5: b (' in out and 'rerunning b' not in out
    assert 'rerunning c: recorded with other arguments (x=1 -> x=2)' in out
    assert f'rerunning d: {read} changed since it ran' in out
    assert f'rerunning e: {made} is gone' in out

    made.write_text('what e leaves')
    runner_at(tmp_path, 5).run(stages)  # all done: nothing runs
    assert [len(runs(tmp_path, s.name)) for s in stages] == [1, 2, 2, 2, 2]
    assert capsys.readouterr().out.count(': reusing ') == 5


def test_reused_stages_leave_the_numbering_and_the_eta_right(tmp_path, capsys):
    first, second = counted(tmp_path, 'first'), counted(tmp_path, 'second')
    runner_at(tmp_path, 3).run([first, second])
    os.remove(tmp_path / 'stages' / 'first.json')
    capsys.readouterr()
    runner = runner_at(tmp_path, 3)
    runner.run([first, second], later=[('report', False)])
    out = capsys.readouterr().out
    assert 'stage 1/3: reusing second' in out
    eta = fmt(ESTIMATE['linear'] + ESTIMATE['report'])  # nothing for the reused stage
    assert re.search(rf'stage 2/3: first \(elapsed 00:0\d, ETA of the whole job ~{eta}\)', out)
    assert runner.done == 2 and len(runner.measured['linear']) == 1


def test_a_stage_reading_the_output_of_one_that_runs_again_runs_too(tmp_path):
    made = str(tmp_path / 'made.txt')
    producer = counted(tmp_path, 'producer', outputs=[made])
    reader, other = counted(tmp_path, 'reader', inputs=[made]), counted(tmp_path, 'other')
    open(made, 'w').close()
    runner_at(tmp_path, 3).run([producer, reader, other])
    assert runner_at(tmp_path, 3).to_run([producer, reader, other]) == []
    os.remove(tmp_path / 'stages' / 'producer.json')
    assert runner_at(tmp_path, 3).to_run([producer, reader, other]) == [producer, reader]


def test_a_killed_stage_is_not_done_and_a_training_stage_resumes(tmp_path, capsys):
    work = tmp_path / 'work'
    train = counted(tmp_path, 'train', 'die-once', kind='pretrain', work_dir=str(work))
    evaluate = counted(tmp_path, 'eval', 'die-once')
    for one in (train, evaluate):
        with pytest.raises(SystemExit, match=rf'stage "{one.name}" failed \(exit -9\)'):
            runner_at(tmp_path, 1).run([one])
    assert runner_at(tmp_path, 1).state(train) == ('resume', '')
    assert runner_at(tmp_path, 1).state(evaluate) == ('rerun', 'it was stopped')
    work.mkdir()
    (work / 'iter_1.pth').write_text('what it saved before it was killed')
    capsys.readouterr()
    runner_at(tmp_path, 2).run([train, evaluate])
    assert runs(tmp_path, 'train') == ['die-once', 'die-once --resume']
    assert runs(tmp_path, 'eval') == ['die-once', 'die-once']
    assert (work / 'iter_1.pth').exists()
    out = capsys.readouterr().out
    assert 'stage 1/2: train, resumed (' in out and 'rerunning eval: it was stopped' in out


def test_a_stopped_stage_with_other_arguments_starts_from_scratch(tmp_path, capsys):
    work = tmp_path / 'work'
    with pytest.raises(SystemExit, match='failed'):
        runner_at(tmp_path, 1).run([counted(tmp_path, 'train', 'die-once', 'lr=1',
                                            kind='pretrain', work_dir=str(work))])
    work.mkdir()
    (work / 'iter_1.pth').write_text('saved with lr=1')
    runner_at(tmp_path, 1).run([counted(tmp_path, 'train', 'die-once', 'lr=2',
                                        kind='pretrain', work_dir=str(work))])
    assert runs(tmp_path, 'train') == ['die-once lr=1', 'die-once lr=2']  # no --resume
    assert not work.exists()  # nothing of lr=1 to resume from, nor to read into the table
    out = capsys.readouterr().out
    assert 'rerunning train: recorded with other arguments (lr=1 -> lr=2)' in out
    assert f'train starts from scratch: removing {work}' in out


def test_work_in_this_process_is_a_stage_too(tmp_path, capsys):
    read = tmp_path / 'read.txt'
    read.write_text('v1')
    summary = Stage('results', 'report', ['report', 'seeds=3'], inputs=[str(read)])
    calls = []
    for _ in range(2):
        runner_at(tmp_path, 1).run_here(summary, lambda: calls.append(read.read_text()))
    read.write_text('v2')
    runner_at(tmp_path, 1).run_here(summary, lambda: calls.append(read.read_text()))
    assert calls == ['v1', 'v2']
    out = capsys.readouterr().out
    assert 'stage 1/1: reusing results: done on' in out and 'read.txt changed since' in out


def test_a_training_stage_runs_the_library_entry_point(tmp_path, synthetic_root, capsys):
    """No path into the repository's tools/: ``python -m densevit_mm.train``, two iterations
    of the debug pretraining, its checkpoint the stage's output."""
    work = tmp_path / 'work'
    train = stages_tool.train_stage(
        'pretrain debug', 'pretrain', 'configs/pretrain/densevit_debug.py', str(work), [
            f'train_dataloader.dataset.data_root={synthetic_root}/',
            'train_dataloader.batch_size=4', 'train_cfg.max_iters=2'],
        validate=False, outputs=[str(work / 'iter_2.pth')])
    assert train.command[:3] == [sys.executable, '-m', 'densevit_mm.train']
    assert train.command[3:6] == ['configs/pretrain/densevit_debug.py', '--work-dir', str(work)]
    assert train.command[6:8] == ['--no-validate', '--cfg-options']
    runner_at(tmp_path, 1).run([train])
    assert (work / 'iter_2.pth').is_file()
    assert runner_at(tmp_path, 1).state(train)[0] == 'done'
    assert 'pretrain debug: done in' in capsys.readouterr().out

# ----- a job stopped: no stage outlives it ---------------------------------------------------

def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie nobody reaped (PID 1 in a container may not) is gone too
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def wait_for(path, timeout=60):
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f'{path} did not appear in {timeout} s'
        time.sleep(0.05)
    return [int(pid) for pid in path.read_text().split()]


def test_a_failing_stage_stops_the_stages_beside_it(tmp_path):
    pid_file = tmp_path / 'sleeper.pid'
    sleeper = stage('sleeper', 'linear', 'import os, time; '
                    f'open({str(pid_file) + ".tmp"!r}, "w").write(str(os.getpid())); '
                    f'os.replace({str(pid_file) + ".tmp"!r}, {str(pid_file)!r}); time.sleep(60)')
    broken = stage('broken', 'linear', 'import os, time\n'
                   f'while not os.path.exists({str(pid_file)!r}): time.sleep(0.05)\n'
                   'raise SystemExit(3)')
    with pytest.raises(SystemExit, match='"broken" failed'):
        StageRunner(2, str(tmp_path / 'logs'), jobs=2, stop_grace=5).run(
            [sleeper, broken], parallel=True)
    assert not alive(wait_for(pid_file)[0])


# a training run: SIGTERM to its process group reaches its DataLoader worker (here: sleep) and
# the run itself, which saves and exits 143, as tools/train.py does; with --resume it goes on
TRAINING = """
import os, signal, subprocess, sys, time
tmp = sys.argv[1]
if "--resume" in sys.argv:
    open(tmp + "/resumed", "w").close()
    sys.exit(0)
worker = subprocess.Popen(["sleep", "60"])
def save(signum, frame):
    open(tmp + "/saved", "w").close()
    sys.exit(143)
signal.signal(signal.SIGTERM, save)
open(tmp + "/train.tmp", "w").write(f"{os.getpid()} {worker.pid}")
os.replace(tmp + "/train.tmp", tmp + "/train.pids")
time.sleep(60)
"""
# an evaluation: ends on SIGTERM; quick once tmp/quick is there
EVALUATING = """
import os, sys, time
tmp = sys.argv[1]
open(tmp + "/eval.count", "a").write("x")
if os.path.exists(tmp + "/quick"):
    sys.exit(0)
open(tmp + "/eval.tmp", "w").write(str(os.getpid()))
os.replace(tmp + "/eval.tmp", tmp + "/eval.pid")
time.sleep(60)
"""
# the job, as tools/run_benchmark.py runs it
DRIVER = """
import json, sys
from tests.conftest import load_tool
tools = load_tool("benchmark_stages")
Stage, StageRunner = tools.Stage, tools.StageRunner
tmp = sys.argv[1]
with open(tmp + "/plan.json") as f:
    stages = [Stage(**s) for s in json.load(f)]
runner = StageRunner(2, tmp + "/logs", jobs=2, record_dir=tmp + "/stages", stop_grace=10)
with runner.handle_signals():
    runner.run(stages, parallel=True)
print("all done", flush=True)
"""


def planned_job(tmp_path):
    """The training and evaluation stages, and a command that runs them as a job."""
    stages = [Stage('train', 'pretrain', [sys.executable, '-c', TRAINING, str(tmp_path)],
                    work_dir=str(tmp_path / 'train')),
              Stage('eval', 'linear', [sys.executable, '-c', EVALUATING, str(tmp_path)])]
    (tmp_path / 'plan.json').write_text(json.dumps([dataclasses.asdict(s) for s in stages]))
    return stages, [sys.executable, '-c', DRIVER, str(tmp_path)]


def start(command, repo_root):
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=repo_root, start_new_session=True)


@pytest.fixture
def leftovers():
    """Pids to kill after the test, whatever it asserted."""
    pids = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['TERM', 'INT'])
def test_a_signal_stops_the_stages_and_a_rerun_continues(tmp_path, repo_root, signum,
                                                          leftovers, capsys):
    stages, command = planned_job(tmp_path)
    job = start(command, repo_root)
    leftovers += [job.pid] + wait_for(tmp_path / 'train.pids') + wait_for(tmp_path / 'eval.pid')
    job.send_signal(signum)
    out = job.communicate(timeout=60)[0]
    assert job.returncode == 128 + signum, out
    assert [pid for pid in leftovers if alive(pid)] == []  # the worker too
    assert (tmp_path / 'saved').exists()
    assert f'stopped by {signal.Signals(signum).name} after 00:' in out
    assert 'train: saved a checkpoint and stopped; resumes from it' in out
    assert 'eval: stopped (exit -15); runs again' in out
    assert 'rerun the same command to continue: completed stages are reused' in out

    (tmp_path / 'quick').touch()
    runner_at(tmp_path, 2, jobs=2).run(stages, parallel=True)  # the job again, in here
    out = capsys.readouterr().out
    assert 'train, resumed (' in out and (tmp_path / 'resumed').exists()
    assert (tmp_path / 'eval.count').read_text() == 'xx' and 'rerunning eval' in out


def test_the_stages_of_a_killed_job_stop_and_are_not_done(tmp_path, repo_root, leftovers):
    stages, command = planned_job(tmp_path)
    job = start(command, repo_root)
    train, worker = wait_for(tmp_path / 'train.pids')
    leftovers += [job.pid, train, worker] + wait_for(tmp_path / 'eval.pid')
    job.kill()  # no handler runs: the kernel tells the stages (PR_SET_PDEATHSIG)
    job.wait()
    stages_pids = [train, leftovers[-1]]  # (a DataLoader worker ends with its training run)
    deadline = time.time() + 10
    while [pid for pid in stages_pids if alive(pid)] and time.time() < deadline:
        time.sleep(0.1)
    assert [pid for pid in stages_pids if alive(pid)] == [] and (tmp_path / 'saved').exists()
    runner = runner_at(tmp_path, 2)
    assert runner.state(stages[0]) == ('resume', '')
    assert runner.state(stages[1]) == ('rerun', 'it was stopped')
