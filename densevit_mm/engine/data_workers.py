"""How many data loader workers a training process gets: the cores its launcher gave it."""
import os
from typing import Mapping, Optional, Tuple

AUTO = 'auto'


def cores_per_process(environ: Mapping[str, str] = os.environ,
                      affinity: Optional[int] = None) -> Tuple[int, str]:
    """The cores one training process may use, and where that number comes from.

    - Slurm gives each task ``SLURM_CPUS_PER_TASK`` cores (``tools/slurm_train.sh``: one
      task, one process, per GPU);
    - otherwise the process may run on the cores of its CPU affinity (what ``taskset``,
      cgroups or a container allow);
    - either is shared by the processes torchrun starts in it (``LOCAL_WORLD_SIZE``:
      ``tools/dist_train.sh`` starts one per GPU, also inside one Slurm task).

    Args:
        environ: The environment. Defaults to ``os.environ``.
        affinity (int, optional): Cores of the affinity mask. Defaults to this process's.
    """
    if environ.get('SLURM_CPUS_PER_TASK', '').isdigit():
        cores, source = int(environ['SLURM_CPUS_PER_TASK']), 'SLURM_CPUS_PER_TASK'
    else:
        cores = affinity if affinity is not None else len(os.sched_getaffinity(0))
        source = f'{cores} cores of the CPU affinity'
    local = int(environ.get('LOCAL_WORLD_SIZE', '1') or 1)
    if local > 1:
        return max(1, cores // local), f'{source} shared by {local} processes on this node'
    return cores, source


def resolve_num_workers(cfg, environ: Mapping[str, str] = os.environ,
                        affinity: Optional[int] = None) -> Optional[str]:
    """Replace ``train_dataloader.num_workers='auto'`` by the cores of this process less
    one (the training process's own: the step, collation of the main process, pinning).
    Returns a line for the log, or None when the config gives a number."""
    loader = cfg.get('train_dataloader') or {}
    if loader.get('num_workers') != AUTO:
        return None
    cores, source = cores_per_process(environ, affinity)
    loader['num_workers'] = max(1, cores - 1)
    return (f"train_dataloader.num_workers='auto': {loader['num_workers']} data workers per "
            f'process ({cores} cores from {source}, one kept for the training process)')
