"""Every workaround for running OpenMMLab 2.x on current PyTorch and NumPy, in one place.

The OpenMMLab releases we depend on (mmengine 0.10, mmcv 2.1, mmpretrain 1.2, mmseg 1.2,
mmdet 3.3) predate PyTorch 2.6+ and NumPy 2.  Each breakage below is handled here or, where
it is an install-time matter, in the file named; ``tests/test_compat.py`` has one test per
item that fails if its workaround stops working.

1. mmdet 3.3 / mmseg 1.2 assert ``mmcv < 2.2``: mmcv is pinned to 2.1.0
   (``requirements/constraints.txt``).  PyPI has it only as source, so
   ``tools/setup_env.sh`` builds it with ops and caches the wheel.
2. torch >= 2.10 headers need C++20; mmcv 2.1's setup.py passes ``-std=c++17``:
   ``tools/setup_env.sh`` raises the flag before building.
3. torchvision must match torch exactly (timm and mmpretrain import it): pinned pair in
   ``requirements/constraints.txt``.
4. mmseg imports ``ftfy`` and ``regex`` without declaring them: listed in ``setup.py``.
5. torch >= 2.6 loads checkpoints with ``weights_only=True``; mmengine 0.10 stores a few
   non-tensor objects in them (its message hub's ``HistoryBuffer``, numpy scalars and
   arrays, and bound methods via ``getattr``), so ``--resume`` fails.
   :func:`allow_mmengine_checkpoint_globals` allow-lists the harmless ones and stops the
   bound methods from being written; safe loading stays on.
6. NumPy 2: ``mmcv.adjust_hue`` computes ``np.uint8(hue_factor * 255)``, which raises
   ``OverflowError`` for a negative factor (half of the draws of MoCo v2 / DenseCL's
   ``ColorJitter(hue=0.1)``).  :func:`adjust_hue` replaces it with a modular shift.
7. NumPy 2 removed ``np.in1d``, which mmpretrain's retrieval metrics call: aliased to
   the equivalent ``np.isin(...).ravel()``.
8. mmengine's ``init_dist('pytorch')`` and ``init_dist('slurm')`` call
   ``torch.cuda.set_device`` unconditionally and its Runner wraps DDP with
   ``device_ids=[LOCAL_RANK]``; both fail without CUDA.  :func:`setup_cpu_distributed` lets
   ``tools/train.py`` run multi-process on CPU (gloo), under torchrun or Slurm.

9. Configs written for GPUs use SyncBN (mmseg's heads), which has no CPU implementation
   under a gloo process group.  :func:`revert_sync_batchnorm_without_cuda` turns it into
   plain BatchNorm when CUDA is absent.

:func:`apply` installs 5-7; importing ``densevit_mm`` calls it once.
"""
import os
import subprocess
from typing import Optional

import numpy as np
import torch

_applied = False


def adjust_hue(img: np.ndarray, hue_factor: float, backend: Optional[str] = None) -> np.ndarray:
    """``mmcv.adjust_hue`` with the hue shift taken modulo 256, as NumPy 1 did silently."""
    import cv2
    from PIL import Image
    from mmcv.image import photometric

    backend = backend or photometric.imread_backend
    if backend not in ('cv2', 'pillow'):
        raise ValueError(f"backend {backend!r} is not supported; use 'cv2' or 'pillow'")
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f'hue_factor {hue_factor} is not in [-0.5, 0.5]')
    if not (isinstance(img, np.ndarray) and img.ndim in (2, 3)):
        raise TypeError('img must be an ndarray with 2 or 3 dimensions')
    shift = np.uint8(int(hue_factor * 255) % 256)
    if backend == 'pillow':
        pil_image = Image.fromarray(img[..., ::-1], mode='RGB')  # BGR -> RGB
        h, s, v = pil_image.convert('HSV').split()
        h = Image.fromarray(np.asarray(h, dtype=np.uint8) + shift, 'L')  # uint8 wraps round
        rgb = Image.merge('HSV', (h, s, v)).convert('RGB')
        return np.array(rgb, dtype=img.dtype)[..., ::-1]
    dtype = img.dtype
    h, s, v = cv2.split(cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_BGR2HSV_FULL))
    h = h.astype(np.uint8) + shift  # uint8 wraps round
    return cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2BGR_FULL).astype(dtype)


def _history_buffer_getstate(self) -> dict:
    # mmengine's own __getstate__ adds the class-wide registry of statistics methods, which
    # pickles as getattr(HistoryBuffer, 'min') etc.; __setstate__ registers the defaults again.
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


def allow_mmengine_checkpoint_globals() -> None:
    """Make mmengine checkpoints loadable with ``weights_only=True`` (item 5).

    Their message hub holds ``HistoryBuffer`` objects of numpy arrays.  We allow-list that
    class and the numpy reconstructors, and stop ``HistoryBuffer`` from pickling bound
    methods (which would need ``getattr``, too powerful to allow).
    """
    from mmengine.logging import HistoryBuffer

    HistoryBuffer.__getstate__ = _history_buffer_getstate
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    safe = [HistoryBuffer, np.dtype, np.ndarray, multiarray._reconstruct, multiarray.scalar]
    # numpy >= 1.25 pickles dtypes by their class (np.dtypes.Float64DType, ...).
    safe += [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith('DType')]
    torch.serialization.add_safe_globals(safe)


def _slurm_environment() -> None:
    """Set torchrun's variables from a Slurm task's, as mmengine's ``_init_dist_slurm``
    does before it calls ``torch.cuda.set_device``."""
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        first = subprocess.run(['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']],
                               capture_output=True, text=True, check=True).stdout.split()
        os.environ['MASTER_ADDR'] = first[0]


def setup_cpu_distributed(cfg) -> None:
    """Prepare a config launched by torchrun or Slurm on a machine without CUDA (item 8).

    Initialises the gloo process group from the launcher's environment (mmengine's Runner
    then skips its own ``init_dist``, which would call ``torch.cuda.set_device``) and makes
    DDP wrap the CPU model with ``device_ids=None``.
    """
    launcher = cfg.get('launcher', 'none')
    if torch.cuda.is_available() or launcher not in ('pytorch', 'slurm'):
        return
    if launcher == 'slurm':
        _slurm_environment()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend='gloo', rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']))
    wrapper = dict(type='MMDistributedDataParallel', broadcast_buffers=False)
    wrapper.update(cfg.get('model_wrapper_cfg') or {})
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def revert_sync_batchnorm_without_cuda(runner) -> None:
    """Replace SyncBN by BatchNorm in ``runner.model`` when CUDA is absent (item 9)."""
    if torch.cuda.is_available():
        return
    from mmengine.model import revert_sync_batchnorm
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    for name, child in list(model.named_children()):
        setattr(model, name, revert_sync_batchnorm(child))


def apply() -> None:
    """Install the run-time workarounds 5-7. Idempotent."""
    global _applied
    if _applied:
        return
    import mmcv
    from mmcv import image
    from mmcv.image import photometric

    for module in (mmcv, image, photometric):
        module.adjust_hue = adjust_hue
    if not hasattr(np, 'in1d'):
        np.in1d = lambda ar1, ar2, **kwargs: np.isin(ar1, ar2, **kwargs).ravel()
    allow_mmengine_checkpoint_globals()
    _applied = True
