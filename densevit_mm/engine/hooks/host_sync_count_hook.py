"""Counts, per training iteration, what makes the host wait for the device."""
import collections
import contextlib
import functools
import os.path as osp
import sys
import warnings
from typing import Callable, Dict, Sequence

import torch
import torch.distributed
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

# Tensor methods that copy a value to the host (on CUDA: the host waits for the stream)
HOST_READS = ('item', 'tolist', 'numpy', '__bool__', '__float__', '__int__', '__index__')
COLLECTIVES = ('all_reduce', 'all_gather', 'all_gather_object', 'broadcast',
               'broadcast_object_list', 'reduce', 'gather', 'scatter', 'reduce_scatter',
               'barrier', 'all_to_all')
CUDA_SYNC = 'called a synchronizing CUDA operation'  # torch.cuda.set_sync_debug_mode's warning
# torch.optim reads its step counters, CPU tensors on every device (Adam / AdamW neither
# capturable nor fused): no GPU waits for them
OPTIMIZERS = osp.dirname(torch.optim.__file__)


@contextlib.contextmanager
def host_sync_calls(record: Callable[[str], None], ignore: Sequence[str] = ()):
    """While active, every read of a tensor value to the host (``read:<method>``) and every
    ``torch.distributed`` collective (``collective:<name>``) calls ``record(key)`` first,
    unless the calling code's file lies under one of the ``ignore`` folders or in
    ``torch.optim``.  ``record`` may raise, to forbid such calls."""
    ignore = tuple(osp.abspath(path) for path in ignore) + (OPTIMIZERS,)
    saved = []

    def patch(owner, name, key):
        original = getattr(owner, name)

        @functools.wraps(original)
        def counted(*args, **kwargs):
            if not sys._getframe(1).f_code.co_filename.startswith(ignore):
                record(key)
            return original(*args, **kwargs)
        saved.append((owner, name, original))
        setattr(owner, name, counted)

    try:
        for name in HOST_READS:
            patch(torch.Tensor, name, f'read:{name}')
        for name in COLLECTIVES:
            if hasattr(torch.distributed, name):
                patch(torch.distributed, name, f'collective:{name}')
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


@HOOKS.register_module()
class HostSyncCountHook(Hook):
    """Counts the host synchronisations of every training iteration: a diagnostic for the
    pretraining loop, which should wait for the GPU at most once per step.

    Within each iteration of the train loop (``run_iter``: the iteration's hooks and its
    step, not the data loading between iterations) it counts

    - ``read:<method>``: reads of tensor values to the host (``.item()``, ``bool(t)``,
      ``.tolist()`` ...), on any device, so that a CPU run shows what a GPU would wait for;
    - ``collective:<name>``: ``torch.distributed`` collectives;
    - ``cuda_sync``: on CUDA, every synchronising operation CUDA itself reports
      (``torch.cuda.set_sync_debug_mode``), blocking copies included.

    ``counts[iteration]`` holds them; at the end every rank writes
    ``<work_dir>/host_syncs_rank<r>.pt``.  Python calls count where the caller's file is
    not under ``ignore`` (folders) or ``torch.optim`` (:func:`host_sync_calls`).  Not for
    production runs: it patches ``torch.Tensor`` methods for the run's duration.

    Args:
        ignore (Sequence[str]): Folders whose code is not counted (e.g. test fixtures that
            read values themselves). Defaults to none.
    """

    priority = 'HIGHEST'

    def __init__(self, ignore: Sequence[str] = ()) -> None:
        self.ignore = ignore
        self.counts: Dict[int, collections.Counter] = {}
        self._current = None
        self._patches = contextlib.ExitStack()

    def _record(self, key: str) -> None:
        if self._current is not None:
            self._current[key] += 1

    def before_train(self, runner) -> None:
        self._patches.enter_context(host_sync_calls(self._record, self.ignore))
        loop = runner.train_loop
        run_iter = loop.run_iter
        cuda = torch.cuda.is_available() and next(runner.model.parameters()).is_cuda

        def counted_iter(*args, **kwargs):
            self._current = self.counts[runner.iter] = collections.Counter()
            try:
                if not cuda:
                    return run_iter(*args, **kwargs)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter('always')
                    torch.cuda.set_sync_debug_mode('warn')
                    try:
                        result = run_iter(*args, **kwargs)
                    finally:
                        torch.cuda.set_sync_debug_mode('default')
                for w in caught:
                    if CUDA_SYNC in str(w.message):
                        self._current['cuda_sync'] += 1
                    else:  # shown as it would have been
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                return result
            finally:
                self._current = None
        loop.run_iter = counted_iter

    def after_train(self, runner) -> None:
        self._patches.close()
        torch.save({it: dict(c) for it, c in self.counts.items()},
                   osp.join(runner.work_dir, f'host_syncs_rank{runner.rank}.pt'))
