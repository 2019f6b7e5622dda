"""Checkpoint files on disk: written atomically, read with errors that say what a file is.

A kill during ``torch.save`` leaves a truncated zip archive; a mistyped path hands a text file
or an image to ``torch.load``, whose message then talks about safe unpickling.  Everything
in this project that writes or reads a checkpoint goes through this module.
"""
import errno
import os
import os.path as osp
import re
import shutil
import zipfile
from typing import Callable, Dict, List, Mapping, Optional

import torch

from .work_dir import temporary_path


class CheckpointFileError(RuntimeError):
    """A file that should be a checkpoint cannot be read as one."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full file system, a full quota


class DiskFullError(RuntimeError):
    """A file could not be written for want of space; no part of it was left behind."""


def _size(n: float) -> str:
    for unit in ('bytes', 'KB', 'MB', 'GB'):
        if n < 1024 or unit == 'GB':
            return f'{n:.0f} {unit}' if unit == 'bytes' else f'{n:.1f} {unit}'
        n /= 1024
    raise AssertionError


def disk_full_error(path: str, err: OSError, needed: int, last_good: Optional[str]
                    ) -> DiskFullError:
    """The error for ``path`` not written for want of space (its partial file removed):
    names the file, the space needed against the space free, and the last good checkpoint."""
    free = shutil.disk_usage(osp.dirname(osp.abspath(path))).free
    return DiskFullError(
        f'no space left to save {path} ({err.strerror}): the partial file is '
        f'removed; a checkpoint needs about {_size(needed)}, {_size(free)} are free there. '
        f'The last good checkpoint is {last_good or "(none written yet)"}: free at least '
        f'{_size(max(needed - free, 0))} (or point --work-dir elsewhere) and continue with '
        '--resume.')


def _fsync_folder(path: str) -> None:
    # a rename is durable only once the folder entry is on disk
    fd = os.open(osp.dirname(osp.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_move(src: str, dst: str) -> None:
    """Flush ``src`` to disk and rename it to ``dst`` (same file system): a reader sees the
    old ``dst`` or the complete new one, never a part."""
    with open(src, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(src, dst)
    _fsync_folder(dst)


def _atomic_write(path: str, write: Callable[[object], None], mode: str = 'wb') -> None:
    tmp = temporary_path(path)
    try:
        with open(tmp, mode) as f:
            write(f)
        atomic_move(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder, flushed and
    renamed into place: never a partial file at ``path``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str) -> None:
    """Replace the text file ``path`` atomically (e.g. mmengine's ``last_checkpoint``)."""
    _atomic_write(path, lambda f: f.write(text), mode='w')


_MAGIC = (
    (b'\x89PNG', 'a PNG image'), (b'\xff\xd8\xff', 'a JPEG image'), (b'GIF8', 'a GIF image'),
    (b'RIFF', 'a RIFF file (WebP image?)'), (b'%PDF', 'a PDF document'),
    (b'\x1f\x8b', 'a gzip archive (a .tar.gz download not yet unpacked?)'),
    (b'<', 'an HTML/XML file (a download error page?)'),
)


def describe_file(path: str) -> str:
    """What ``path`` holds, in words, judged from its size and first bytes."""
    size = osp.getsize(path)
    if size == 0:
        return 'an empty file (0 bytes)'
    with open(path, 'rb') as f:
        head = f.read(512)
    if head.startswith(b'PK\x03\x04'):
        if not zipfile.is_zipfile(path):
            return (f'a zip archive cut short ({size} bytes, no end-of-archive record): a '
                    'checkpoint whose writing was interrupted')
        return f'a zip archive of {size} bytes'
    if head[:1] == b'\x80':
        return f'a pickle file of {size} bytes (the legacy torch.save format)'
    if len(head) > 8 and head[8:10] == b'{"':
        return 'a safetensors file'
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        return f'a binary file of {size} bytes that is not a PyTorch checkpoint'
    first_line = text.strip().splitlines()[0][:60] if text.strip() else ''
    return f'a text file of {size} bytes starting {first_line!r}'


def load_checkpoint_file(path: str, mmap: bool = False) -> dict:
    """``torch.load(path, weights_only=True)`` on the CPU, with an error that names the file
    and says what it is when it is not a readable checkpoint.

    Args:
        path (str): The file.
        mmap (bool): Map the tensors instead of reading them (a cheap full check of the
            archive's structure, e.g. to find a resumable checkpoint); files in the legacy
            (non-zip) format are read as usual. Defaults to False.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointFileError: it exists but is not a checkpoint this project can read.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True,
                                mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        what = describe_file(path)
        text = re.sub(r'\x1b\[[0-9;]*m', '', str(err))  # torch bolds part of its message
        detail = f"{type(err).__name__}: {(text.strip().splitlines() or [''])[0][:120]}"
        if what.startswith('a zip archive of') or what.startswith('a pickle file'):
            refused = sorted(set(re.findall(r'Unsupported global: GLOBAL ([\w.]+)', text)))
            # not tools/convert_checkpoint.py: it reads with this same safe loading
            hint = ('it holds Python objects that safe loading refuses'
                    + (f' ({", ".join(refused)})' if refused else '')
                    + '; if you trust its source, torch.load it with weights_only=False and '
                    "torch.save only its weights (e.g. its 'model' or 'state_dict' entry)")
        else:
            hint = 'give the path of a .pth checkpoint'
        raise CheckpointFileError(f'{path} is not a readable PyTorch checkpoint: it is '
                                  f'{what} ({detail}); {hint}'
                                  ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointFileError(f'{path} holds a {type(checkpoint).__name__}, not a '
                                  'checkpoint dict')
    return checkpoint


def non_finite_tensors(tensors: Mapping[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point tensors with any ``nan`` or ``inf`` entry (one read of
    the device for all of them)."""
    by_device: Dict[torch.device, Dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            by_device.setdefault(t.device, {})[name] = t
    finite = {}
    for group in by_device.values():
        flags = torch.stack([torch.isfinite(t).all() for t in group.values()]).tolist()
        finite.update(zip(group, flags))
    return [name for name in tensors if finite.get(name) is False]


def describe_non_finite(tensors: Mapping[str, torch.Tensor]) -> Optional[str]:
    """``'<n> tensors hold nan or inf (a, b, ...)'`` naming up to ten, or None if all are finite."""
    bad = non_finite_tensors(tensors)
    if not bad:
        return None
    shown = ', '.join(bad[:10]) + (f' and {len(bad) - 10} more' if len(bad) > 10 else '')
    return f'{len(bad)} tensor(s) hold nan or inf ({shown})'
