"""One run per work dir, and the temporary files a run leaves there.

Two runs in one work dir (a requeued job and a manual restart, two requeues of one job)
write the same ``iter_N.pth`` and ``last_checkpoint`` and delete each other's checkpoints.
:class:`WorkDirLock` lets one in: an ``fcntl`` lock on ``<work_dir>/.run.lock``, held by
rank 0 for the life of the process and released by the kernel when it ends however it
ends (also over NFS v4, whose server keeps the lock). The file names the holder.

Temporary files carry their owner in their name (:func:`temporary_path`), so that a start
removes only those whose owner is gone (:func:`remove_stale_temporaries`).
"""
import datetime
import fcntl
import glob
import os
import os.path as osp
import re
import socket
from typing import List

LOCK_NAME = '.run.lock'
# .<file name>.<host>.<pid>.partial
_TEMPORARY = re.compile(r'^\.(?P<name>.+)\.(?P<host>[^.]+)\.(?P<pid>\d+)\.partial$')


def _host() -> str:
    return socket.gethostname().split('.')[0] or 'localhost'


def temporary_path(path: str) -> str:
    """Where to write ``path`` before renaming it into place: a hidden name in the same
    folder that names this process (host and PID)."""
    folder, name = osp.split(osp.abspath(path))
    return osp.join(folder, f'.{name}.{_host()}.{os.getpid()}.partial')


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str) -> List[str]:
    """Remove the temporary files of ``folder`` whose owner is no live process of this
    host; files of other hosts are removed too (call this holding the folder's
    :class:`WorkDirLock`: no other run writes there). Returns the removed paths."""
    removed = []
    for path in glob.glob(osp.join(folder, '.*.partial')):
        match = _TEMPORARY.match(osp.basename(path))
        if (match and match['host'] == _host() and int(match['pid']) != os.getpid()
                and _pid_alive(int(match['pid']))):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


class WorkDirBusyError(RuntimeError):
    """Another live run holds the work dir."""


class WorkDirLock:
    """The lock of one run on its work dir (rank 0 takes it; see the module's docstring).

    Args:
        work_dir (str): The run's work dir (created if missing).
    """

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.path = osp.join(work_dir, LOCK_NAME)
        self._file = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`WorkDirBusyError` naming the holder."""
        os.makedirs(self.work_dir, exist_ok=True)
        f = open(self.path, 'a+')
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or 'a process that has not written its name yet'
            f.close()
            raise WorkDirBusyError(
                f'{self.work_dir} is in use by another run ({holder}; lock file {self.path}). '
                'Two runs in one work dir overwrite and delete each other\'s checkpoints: '
                'wait for that run to end or stop it, or give this one another --work-dir.'
            ) from None
        started = datetime.datetime.now().isoformat(sep=' ', timespec='seconds')
        f.seek(0)
        f.truncate()
        f.write(f'host {_host()}, PID {os.getpid()}, started {started}\n')
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None
