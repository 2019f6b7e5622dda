"""One run per work dir: the lock, and the temporary files a start removes."""
import os
import os.path as osp
import signal
import socket
import subprocess
import sys

import pytest

from densevit_mm.checkpoint import (WorkDirBusyError, WorkDirLock, remove_stale_temporaries,
                                    temporary_path)
from tests.test_tools.test_train import write_test_config

HOST = socket.gethostname().split('.')[0]
HOLD = ('import sys, time; from densevit_mm.checkpoint import WorkDirLock; '
        'lock = WorkDirLock(sys.argv[1]); lock.acquire(); print("held", flush=True); time.sleep(120)')


@pytest.fixture
def holder(tmp_path, repo_root):
    """A process holding the lock of tmp_path/work."""
    proc = subprocess.Popen([sys.executable, '-c', HOLD, str(tmp_path / 'work')],
                            stdout=subprocess.PIPE, text=True, cwd=repo_root)
    assert proc.stdout.readline() == 'held\n'
    yield proc
    proc.kill()
    proc.wait()


def test_a_held_work_dir_is_refused_naming_the_holder_until_it_dies(tmp_path, holder):
    with pytest.raises(WorkDirBusyError, match=(
            rf'{tmp_path}/work is in use by another run \(host {HOST}, PID {holder.pid}, '
            r'started 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d; lock file .*\.run\.lock\).*another '
            r'--work-dir')):
        WorkDirLock(str(tmp_path / 'work')).acquire()
    holder.send_signal(signal.SIGKILL)  # no clean-up: the kernel releases the lock
    holder.wait()
    lock = WorkDirLock(str(tmp_path / 'work'))
    lock.acquire()
    assert open(lock.path).read().startswith(f'host {HOST}, PID {os.getpid()}, started ')
    lock.release()


def test_a_start_removes_only_temporary_files_no_live_process_owns(tmp_path, holder):
    work = tmp_path / 'work'
    dead = subprocess.Popen(['true'])
    dead.wait()
    names = {
        'live': f'.iter_4.pth.{HOST}.{holder.pid}.partial',
        'dead': f'.iter_4.pth.{HOST}.{dead.pid}.partial',
        'own': osp.basename(temporary_path(str(work / 'iter_6.pth'))),
        'other host': f'.last_checkpoint.elsewhere.{holder.pid}.partial',
        'old name': '.iter_2.pth.partial',
    }
    for name in names.values():
        (work / name).write_bytes(b'PK\x03\x04torn')
    (work / 'iter_2.pth').write_bytes(b'a checkpoint')
    removed = remove_stale_temporaries(str(work))
    assert sorted(osp.basename(p) for p in removed) == sorted(
        name for what, name in names.items() if what != 'live')
    assert sorted(os.listdir(work)) == sorted(['.run.lock', 'iter_2.pth', names['live']])


def test_a_second_start_in_a_work_dir_is_refused_and_the_first_finishes(
        tmp_path, synthetic_root, repo_root):
    """A requeued job and a manual restart in one work dir: the later start stops at once,
    naming the first; the first finishes with its checkpoints and pointer as alone."""
    config = write_test_config(
        tmp_path / 'cfg.py', synthetic_root,
        train_cfg="dict(type='IterBasedTrainLoop', max_iters=40)",
        custom_hooks="[dict(type='FaultHook', fault='slow', iters=range(40))]",
        default_hooks="dict(checkpoint=dict(interval=10, max_keep_ckpts=2))")
    work = tmp_path / 'work'
    command = [sys.executable, 'tools/train.py', config, '--work-dir', str(work), '--resume']
    env = dict(os.environ, PYTHONPATH=repo_root, OMP_NUM_THREADS='1')  # for tests.fixtures
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, cwd=repo_root, env=env)
    try:
        lock_file = work / '.run.lock'
        while not (lock_file.exists() and lock_file.read_text()):
            assert first.poll() is None, first.stderr.read()[-3000:]
        second = subprocess.run(command, capture_output=True, text=True, timeout=300,
                                cwd=repo_root, env=env)
        assert first.poll() is None, 'the first run ended before the second started'
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1] == (
            f'tools/train.py: {work} is in use by another run (host {HOST}, PID {first.pid}, '
            f'started {lock_file.read_text().split("started ")[1].strip()}; lock file '
            f"{lock_file}). Two runs in one work dir overwrite and delete each other's "
            'checkpoints: wait for that run to end or stop it, or give this one another '
            '--work-dir.')
        assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    finally:
        first.kill()
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['iter_30.pth',
                                                                         'iter_40.pth']
    assert open(work / 'last_checkpoint').read() == str(work / 'iter_40.pth')
    assert not [f for f in os.listdir(work) if f.endswith('.partial')]
