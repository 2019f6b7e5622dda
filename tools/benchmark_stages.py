"""The stages of tools/run_benchmark.py: child processes (training runs of
``python -m densevit_mm.train`` and other tools), run one or several at a time, with the
elapsed time and an ETA of the whole job.

A job run again with the same arguments continues where it stopped: a stage that finished
left a record (its command, and the files it read from other stages) and is reused; a
training stage that was stopped resumes from its last checkpoint; any other stage runs again.
SIGINT / SIGTERM to the job stop its stages the way Slurm stops a training run.

It lives beside its tool, not in densevit_mm: only the built-in benchmark orchestrates runs of
the repository's configs and tools (run_benchmark.py imports it from its own directory, which
Python puts on sys.path for a script; tests load it with tests.conftest.load_tool)."""
import contextlib
import ctypes
import json
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from densevit_mm.checkpoint import atomic_write_text
from densevit_mm.engine import PREEMPTED_EXIT_CODE

# the repository (this file is tools/benchmark_stages.py): the stages run there
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# seconds a stage of each kind takes on 2 CPU cores (two at a time for the pretrainings and
# the transfer runs), until one has been measured
ESTIMATE = dict(data=45, pretrain=280, oracle=120, linear=25, fpnfrozen=35, finetune=90,
                det=300, fcos=25, retinanet=35, maskrcnnfrozen=150, retrieval=25, report=60)
# seconds the stages have to stop after SIGTERM (a training run saves a checkpoint at its
# next iteration, one to a few seconds here) before they are killed
STOP_GRACE = 60
# PR_SET_PDEATHSIG: the kernel sends a child SIGTERM when the job dies, even by SIGKILL
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == 'linux' else None


@dataclass
class Stage:
    """A child process of the job.

    ``work_dir``: set for a training run in that folder (:func:`train_stage`), which a
    stopped job resumes with ``--resume``.  ``inputs``: files from other stages it reads (it runs again when one
    changed since); ``outputs``: files it leaves (its record counts only while they are there).
    """
    name: str
    kind: str
    command: List[str]
    work_dir: Optional[str] = None
    inputs: Sequence[str] = ()
    outputs: Sequence[str] = ()


def log(msg: str) -> None:
    print(f'[run_benchmark {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def fmt(seconds: float) -> str:
    return time.strftime('%M:%S' if seconds < 3600 else '%H:%M:%S', time.gmtime(seconds))


def _slug(name: str) -> str:
    return re.sub(r'\W+', '_', name)


def _identity(paths: Sequence[str]) -> Dict[str, Optional[List[int]]]:
    """Size and modification time of each file (None: missing): a file rewritten since
    has another."""
    found = {}
    for path in paths:
        try:
            st = os.stat(path)
            found[path] = [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            found[path] = None
    return found


def _difference(old: Sequence[str], new: Sequence[str]) -> str:
    gone, added = [a for a in old if a not in new], [a for a in new if a not in old]
    return f'{" ".join(gone[:3]) or "-"} -> {" ".join(added[:3]) or "-"}'


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:  # the child leads its own process group (start_new_session): its workers too
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def _end_with_parent() -> None:
    _PRCTL(1, signal.SIGTERM)


def train_stage(name: str, kind: str, config: str, work_dir: str, options: List[str],
                validate: bool = True, inputs: Sequence[str] = (),
                outputs: Sequence[str] = ()) -> Stage:
    """``python -m densevit_mm.train`` on ``config`` in ``work_dir``; ``inputs`` /
    ``outputs`` as in :class:`Stage` (the checkpoint it starts from, the one it leaves)."""
    command = [sys.executable, '-m', 'densevit_mm.train', config, '--work-dir', work_dir]
    if not validate:
        command.append('--no-validate')
    if options:
        command += ['--cfg-options', *options]
    return Stage(name, kind, command, work_dir, inputs, outputs)


_RESULT = re.compile(r'(mIoU|coco/bbox_mAP): ([0-9.]+)')


class StageRunner:
    """Runs stages, ``jobs`` at a time, each child with ``cores // jobs`` threads and its
    output in ``log_dir/<stage>.log``, and keeps the measured durations for the ETA.

    With a ``record_dir``, a stage writes ``<record_dir>/<stage>.json`` (its command and the
    size and time of its inputs) before it starts and again, marked done, once it exited 0.
    A stage whose record is done with the same command and inputs, and whose outputs are
    there, is reused; one that started and was stopped resumes (a training stage, with
    ``--resume``) or runs again; any other starts from scratch in an emptied work dir.

    Within :meth:`handle_signals`, SIGINT / SIGTERM send SIGTERM to every running stage
    (a training run saves a checkpoint and exits 143), wait ``stop_grace`` seconds for them,
    kill what is left, and exit with 128 + the signal; a second signal kills them at once.
    """

    def __init__(self, total_stages: int, log_dir: str, jobs: int = 1,
                 record_dir: Optional[str] = None, stop_grace: float = STOP_GRACE) -> None:
        self.total, self.log_dir, self.jobs = total_stages, log_dir, jobs
        self.record_dir, self.stop_grace = record_dir, stop_grace
        self.started = time.time()
        self.done = 0
        self.measured: Dict[str, List[float]] = {}
        self.running: List[dict] = []
        self.stop_signal: Optional[int] = None
        self._polling = False  # in run()'s loop, which stops the children itself
        self._in_process: Optional[Stage] = None
        os.makedirs(log_dir, exist_ok=True)
        if record_dir:
            os.makedirs(record_dir, exist_ok=True)

    # ----- records -------------------------------------------------------------------------

    def state(self, stage: Stage) -> Tuple[str, str]:
        """``('done', date)``, ``('resume', '')`` (stopped), ``('new', '')`` (no record) or
        ``('rerun', why)`` for ``stage``."""
        if self.record_dir is None:
            return 'new', ''
        path = osp.join(self.record_dir, _slug(stage.name) + '.json')
        if not osp.isfile(path):
            return 'new', ''
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            return 'rerun', f'its record {path} is unreadable'
        if record.get('command') != list(stage.command):
            return 'rerun', ('recorded with other arguments ('
                             f'{_difference(record.get("command") or [], stage.command)})')
        changed = [p for p, v in _identity(stage.inputs).items()
                   if (record.get('inputs') or {}).get(p) != v]
        if changed:
            return 'rerun', f'{changed[0]} changed since it ran'
        if 'done' not in record:
            return ('resume', '') if stage.work_dir else ('rerun', 'it was stopped')
        missing = [p for p in stage.outputs if not osp.exists(p)]
        if missing:
            return 'rerun', f'{missing[0]} is gone'
        return 'done', record['done']

    def to_run(self, stages: Sequence[Stage]) -> List[Stage]:
        """Those of ``stages`` (in job order) that a run now executes: the ones not done, and
        the ones reading an output of these."""
        changed, result = set(), []
        for stage in stages:
            if self.state(stage)[0] != 'done' or changed & set(stage.inputs):
                result.append(stage)
                changed.update(stage.outputs)
        return result

    def _record(self, stage: Stage, done: bool) -> None:
        if self.record_dir is None:
            return
        record = dict(stage=stage.name, command=list(stage.command),
                      inputs=_identity(stage.inputs))
        if done:
            record['done'] = time.strftime('%Y-%m-%d %H:%M:%S')
        atomic_write_text(osp.join(self.record_dir, _slug(stage.name) + '.json'),
                          json.dumps(record, indent=1) + '\n')

    def _reuse(self, stage: Stage) -> bool:
        state, date = self.state(stage)
        if state == 'done':
            self.done += 1
            log(f'stage {self.done}/{self.total}: reusing {stage.name}: done on {date}')
        return state == 'done'

    def _prepare(self, stage: Stage) -> bool:
        """Say how ``stage`` starts, leave no stale run in its work dir, record the start;
        whether it resumes."""
        state, why = self.state(stage)
        if state == 'rerun':
            log(f'  rerunning {stage.name}: {why}')
        if state != 'resume' and self.record_dir and stage.work_dir and osp.isdir(
                stage.work_dir):
            # its checkpoints would be resumed from, its logs read into the table
            log(f'  {stage.name} starts from scratch: removing {stage.work_dir}')
            shutil.rmtree(stage.work_dir)
        self._record(stage, done=False)
        return state == 'resume'

    # ----- running -------------------------------------------------------------------------

    def expected(self, kind: str) -> float:
        done = self.measured.get(kind)
        return sum(done) / len(done) if done else ESTIMATE[kind]

    def eta(self, pending: List[Stage], jobs: int, later: List[Tuple[str, bool]]) -> float:
        """Seconds left: the pending stages, ``jobs`` at a time, and the stages still to
        come after them, ``(kind, run in parallel)``."""
        return (sum(self.expected(s.kind) for s in pending) / jobs
                + sum(self.expected(k) / (self.jobs if p else 1) for k, p in later))

    def run(self, stages: List[Stage], parallel: bool = False,
            later: List[Tuple[str, bool]] = ()) -> None:
        """Run ``stages`` (``parallel``: ``jobs`` at a time), reusing the done ones;
        ``later``: the stages still to run after these, ``(kind, run in parallel)``, for the
        ETA.  No child outlives this call."""
        queue = [stage for stage in stages if not self._reuse(stage)]
        if not queue:
            return
        jobs = min(self.jobs, len(queue)) if parallel else 1
        threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
                   OMP_NUM_THREADS=str(threads))
        self._polling = True
        try:
            while queue or self.running:
                if self.stop_signal is not None:
                    self._stop()
                while queue and len(self.running) < jobs:
                    stage = queue.pop(0)
                    self._start(stage, env, self.eta([stage] + queue, jobs, list(later)))
                if jobs == 1:  # one child: show its progress lines (mmengine's ETA in them)
                    self._show_progress(self.running[0])
                for entry in [e for e in self.running if e['proc'].poll() is not None]:
                    if jobs == 1:
                        self._show_progress(entry)
                    self.running.remove(entry)
                    self._finish(entry)
                time.sleep(0.2)
        finally:
            try:
                self._end_children()  # a stage failed, or an exception: stop the others
            finally:
                self._polling = False

    def run_here(self, stage: Stage, work: Callable[[], None]) -> None:
        """Run ``work`` in this process as ``stage`` (reused when done); a signal stops it
        at once (``subprocess.run`` kills its child on the way out)."""
        if self._reuse(stage):
            return
        self.done += 1
        log(f'stage {self.done}/{self.total}: {stage.name} (elapsed '
            f'{fmt(time.time() - self.started)})')
        self._prepare(stage)
        self._in_process = stage
        try:
            work()
        finally:
            self._in_process = None
        self._record(stage, done=True)

    def _start(self, stage: Stage, env: dict, eta: float) -> None:
        self.done += 1
        resume = self._prepare(stage)
        log(f'stage {self.done}/{self.total}: {stage.name}{", resumed" if resume else ""} '
            f'(elapsed {fmt(time.time() - self.started)}, ETA of the whole job ~{fmt(eta)})')
        path = osp.join(self.log_dir, _slug(stage.name) + '.log')
        with open(path, 'a' if resume else 'w') as out:
            shown = out.tell()
            # its own session: a terminal's Ctrl-C reaches the job only, which stops the
            # stages in order (below), and killpg reaches the stage's DataLoader workers
            proc = subprocess.Popen(stage.command + ['--resume'] * resume, stdout=out,
                                    stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                                    start_new_session=True,
                                    preexec_fn=_end_with_parent if _PRCTL else None)
        self.running.append(dict(stage=stage, proc=proc, start=time.time(), path=path,
                                 shown=shown, signalled=False))

    @staticmethod
    def _show_progress(entry: dict) -> None:
        with open(entry['path']) as f:
            f.seek(entry['shown'])
            text = f.read()
        complete = text[:text.rfind('\n') + 1]  # whole lines only
        entry['shown'] += len(complete.encode())
        for line in complete.splitlines():
            if 'Iter(' in line or 'Epoch(' in line or line.startswith('wrote'):
                print('    ' + (line[line.find(' - INFO - ') + 10:] if ' - INFO - ' in line
                               else line), flush=True)

    def _finish(self, entry: dict) -> None:
        stage, proc = entry['stage'], entry['proc']
        with open(entry['path']) as f:
            tail = f.readlines()[-40:]
        if proc.returncode != 0:
            sys.stdout.write(''.join(tail))
            raise SystemExit(f'stage "{stage.name}" failed (exit {proc.returncode}); log: '
                             f'{entry["path"]}; command: {" ".join(stage.command)}')
        self._record(stage, done=True)
        seconds = time.time() - entry['start']
        self.measured.setdefault(stage.kind, []).append(seconds)
        found = _RESULT.findall(''.join(tail))
        result = f', {found[-1][0]} {found[-1][1]}' if found else ''
        log(f'  {stage.name}: done in {fmt(seconds)}{result}')

    # ----- stopping ------------------------------------------------------------------------

    @contextlib.contextmanager
    def handle_signals(self):
        """SIGINT and SIGTERM stop the job and its stages (see the class)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT,
                                                                     signal.SIGTERM)}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame) -> None:
        again = self.stop_signal is not None
        self.stop_signal = self.stop_signal or signum
        for entry in self.running:
            if again or not entry['signalled']:
                _signal_group(entry['proc'], signal.SIGKILL if again else signal.SIGTERM)
                entry['signalled'] = True
        if not self._polling and not again:  # no loop to come back to: stop here
            self._stopped([f'{self._in_process.name}: stopped; runs again'] *
                          bool(self._in_process))

    def _end_children(self) -> List[str]:
        """SIGTERM to the running stages, ``stop_grace`` seconds for them to exit, SIGKILL to
        the rest; how each one ended."""
        for entry in self.running:
            if not entry['signalled']:
                _signal_group(entry['proc'], signal.SIGTERM)
                entry['signalled'] = True
        deadline = time.time() + self.stop_grace
        while (any(e['proc'].poll() is None for e in self.running)
               and time.time() < deadline):
            time.sleep(0.1)
        ended = []
        for entry in self.running:
            stage, proc = entry['stage'], entry['proc']
            then = 'resumes' if stage.work_dir else 'runs again'
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
                ended.append(f'{stage.name}: killed after {self.stop_grace:.0f} s; {then}')
            elif proc.returncode == 0:
                ended.append(f'{stage.name}: finished; recorded as done')
                self._record(stage, done=True)
            elif proc.returncode == PREEMPTED_EXIT_CODE and stage.work_dir:
                ended.append(f'{stage.name}: saved a checkpoint and stopped; resumes from it')
            else:
                ended.append(f'{stage.name}: stopped (exit {proc.returncode}); {then}')
        self.running = []
        return ended

    def _stop(self) -> None:
        self._stopped(self._end_children())

    def _stopped(self, ended: List[str]) -> None:
        log(f'stopped by {signal.Signals(self.stop_signal).name} after '
            f'{fmt(time.time() - self.started)}' + (':' if ended else ' between stages'))
        for line in ended:
            print('    ' + line, flush=True)
        log('rerun the same command to continue: completed stages are reused')
        raise SystemExit(128 + self.stop_signal)
