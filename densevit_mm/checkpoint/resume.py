"""Which checkpoint a training run continues from (``tools/train.py --resume``).

mmengine's auto-resume trusts the ``last_checkpoint`` pointer: when it is missing the run
starts from scratch and overwrites the checkpoints that are there; when the file it names is
truncated the run stops.  Here the pointer is tried first, then every resumable checkpoint of
the work dir, newest first; unreadable ones are skipped and named.
"""
import logging
import os
import os.path as osp
import re
from typing import List, NamedTuple, Optional, Tuple

from .checkpoint_file import CheckpointFileError, load_checkpoint_file

# What CrashSafeCheckpointHook (and mmengine's CheckpointHook) write for resuming; best_* and
# published checkpoints hold no optimizer state.
RESUMABLE_NAME = re.compile(r'^(epoch|iter|preempted_iter)_\d+\.pth$')
RESUME_KEYS = ('meta', 'state_dict', 'optimizer')


class ResumePlan(NamedTuple):
    """``checkpoint``: the file to resume from, or None to start from scratch; ``notes``:
    ``(logging level, message)`` pairs for the run's log."""
    checkpoint: Optional[str]
    notes: List[Tuple[int, str]]


def resumable_checkpoints(work_dir: str) -> List[str]:
    """The work dir's resumable checkpoint files, newest (by modification time) first."""
    if not osp.isdir(work_dir):
        return []
    paths = [osp.join(work_dir, name) for name in os.listdir(work_dir)
             if RESUMABLE_NAME.match(name)]
    return sorted(paths, key=osp.getmtime, reverse=True)


def _pointer_target(work_dir: str) -> Optional[str]:
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        target = f.read().strip()
    if target and not osp.isfile(target):  # written relative to another directory
        moved = osp.join(work_dir, osp.basename(target))
        target = moved if osp.isfile(moved) else target
    return target or None


def check_resumable(path: str) -> None:
    """Raise ``CheckpointFileError`` / ``FileNotFoundError`` unless ``path`` can be resumed
    from: a readable checkpoint with model, optimizer and loop state."""
    checkpoint = load_checkpoint_file(path, mmap=True)
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointFileError(f'{path} cannot be resumed from: it has no {missing} '
                                  '(a backbone-only, best or published checkpoint, or one saved '
                                  'with save_optimizer=False?); load it with load_from to '
                                  'fine-tune instead')


def find_resume_checkpoint(work_dir: str) -> Tuple[Optional[str], List[str]]:
    """The newest checkpoint of ``work_dir`` that can be resumed from.

    Returns:
        tuple: its path (None if there is none) and, for every newer file that was skipped
        because it could not be read or resumed from, why (a message naming the file).
    """
    candidates = [_pointer_target(work_dir)] + resumable_checkpoints(work_dir)
    tried, skipped = set(), []
    for path in candidates:
        if path is None or osp.abspath(path) in tried:
            continue
        tried.add(osp.abspath(path))
        try:
            check_resumable(path)
        except (CheckpointFileError, FileNotFoundError) as err:
            skipped.append(str(err))
        else:
            return path, skipped
    return None, skipped


def plan_resume(work_dir: str, resume: Optional[str]) -> ResumePlan:
    """Decide where a run starts.

    Args:
        work_dir (str): The run's work dir.
        resume (str, optional): None (no ``--resume``), ``'auto'`` (``--resume`` alone: the
            newest resumable checkpoint of the work dir, or from scratch if it has none), or
            a checkpoint path.

    Raises:
        CheckpointFileError: ``--resume`` found checkpoints in the work dir but none it can
            resume from, or the given file is not a resumable checkpoint.
    """
    if resume is None:
        existing = resumable_checkpoints(work_dir)
        notes = []
        if existing:
            notes.append((logging.WARNING, (
                f'{work_dir} already holds {len(existing)} checkpoint(s) (newest '
                f'{osp.basename(existing[0])}); this run starts FROM SCRATCH and its own '
                'checkpoints will overwrite files of the same name. Pass --resume to continue '
                'the earlier run instead.')))
        return ResumePlan(None, notes)
    if resume != 'auto':
        check_resumable(resume)
        return ResumePlan(resume, [(logging.INFO, f'resuming from {resume}')])

    path, skipped = find_resume_checkpoint(work_dir)
    notes = [(logging.WARNING, f'--resume: skipping {why}') for why in skipped]
    if path is not None:
        notes.append((logging.INFO, f'--resume: resuming from {path}, the newest readable '
                                    f'checkpoint in {work_dir}'))
        return ResumePlan(path, notes)
    if skipped:
        raise CheckpointFileError(
            f'--resume: {work_dir} holds checkpoints but none can be resumed from: '
            + ' '.join(skipped) + ' '
            '-- Not starting from scratch over them: move them away to start afresh, or pass '
            '--resume PATH to pick one.')
    notes.append((logging.INFO, f'--resume: no checkpoint in {work_dir} yet: starting from '
                                'scratch'))
    return ResumePlan(None, notes)
