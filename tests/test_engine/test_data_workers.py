"""Data workers from the launcher's cores, and the warning when the loader falls behind."""
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.logging import MessageHub

from densevit_mm.engine import DataThroughputHook, cores_per_process, resolve_num_workers


@pytest.mark.parametrize('environ,affinity,expected', [
    (dict(SLURM_CPUS_PER_TASK='12'), 96, (12, 'SLURM_CPUS_PER_TASK')),  # srun: task = process
    # torchrun's 8 processes inside one Slurm task of 96 cores
    (dict(SLURM_CPUS_PER_TASK='96', LOCAL_WORLD_SIZE='8'), 128,
     (12, 'SLURM_CPUS_PER_TASK shared by 8 processes on this node')),
    (dict(LOCAL_WORLD_SIZE='8'), 128,
     (16, '128 cores of the CPU affinity shared by 8 processes on this node')),
    (dict(LOCAL_WORLD_SIZE='8'), 4, (1, '4 cores of the CPU affinity shared by 8 processes '
                                        'on this node')),
    ({}, 6, (6, '6 cores of the CPU affinity')),
    (dict(SLURM_CPUS_PER_TASK=''), 6, (6, '6 cores of the CPU affinity')),
])
def test_cores_per_process_from_slurm_or_the_affinity_shared_on_the_node(environ, affinity,
                                                                         expected):
    assert cores_per_process(environ, affinity) == expected


def test_glibc_keeps_freed_image_buffers_in_a_worker():
    """The settings glibc must take (this machine's C library is glibc)."""
    import multiprocessing

    from densevit_mm.datasets.worker_memory import keep_freed_image_memory
    with multiprocessing.get_context('fork').Pool(1) as pool:  # not this test process
        assert pool.apply(keep_freed_image_memory) is True


def test_auto_workers_keep_one_core_for_the_training_process():
    cfg = Config(dict(train_dataloader=dict(num_workers='auto')))
    note = resolve_num_workers(cfg, dict(SLURM_CPUS_PER_TASK='16'), affinity=64)
    assert cfg.train_dataloader.num_workers == 15
    assert note == ("train_dataloader.num_workers='auto': 15 data workers per process (16 cores "
                    'from SLURM_CPUS_PER_TASK, one kept for the training process)')
    single = Config(dict(train_dataloader=dict(num_workers='auto')))
    resolve_num_workers(single, {}, affinity=1)
    assert single.train_dataloader.num_workers == 1
    fixed = Config(dict(train_dataloader=dict(num_workers=3)))
    assert resolve_num_workers(fixed, {}, affinity=64) is None
    assert fixed.train_dataloader.num_workers == 3
    assert Config.fromfile('configs/pretrain/densevit_s.py').train_dataloader.num_workers == 'auto'


class Logged:
    def __init__(self):
        self.warnings = []

    def warning(self, text):
        self.warnings.append(text)


class FakeRunner:
    """The parts of a runner the hook reads: iteration, message hub, loader, logger."""

    def __init__(self, name, workers):
        self.message_hub = MessageHub.get_instance(name)
        self.train_dataloader = type('Loader', (), dict(num_workers=workers))()
        self.logger = Logged()
        self.iter = 0

    def step(self, hook, data_time, time):
        self.message_hub.update_scalar('train/data_time', data_time)
        self.message_hub.update_scalar('train/time', time)
        hook.after_train_iter(self, 0)
        self.iter += 1


def test_a_loader_that_cannot_keep_up_is_reported_with_the_workers_that_would():
    runner, hook = FakeRunner('throughput_slow', workers=4), DataThroughputHook(
        window=10, warmup=5, repeat=30)
    for _ in range(5):  # warm-up: not judged
        runner.step(hook, 1.0, 1.1)
    for _ in range(10):  # 60 ms of 100 wait: 4 workers x 100 / 40 = 10 would keep up
        runner.step(hook, 0.06, 0.1)
    assert runner.logger.warnings == [
        'the data loader is behind: over iterations 6-15 each waited 60 ms for its batch of a '
        '100 ms iteration (median, 60%); about 10 workers per process would keep up (11 cores '
        'with the training process; it has 4). tools/benchmark_data.py measures the CPU time '
        'per image of each data path; a GPU near its limit needs the device augmentation of '
        'configs/pretrain/densevit_s.py and shards on network storage.']
    for _ in range(20):  # still behind, within `repeat`: not repeated
        runner.step(hook, 0.06, 0.1)
    assert len(runner.logger.warnings) == 1
    for _ in range(10):
        runner.step(hook, 0.06, 0.1)
    assert len(runner.logger.warnings) == 2


def test_a_loader_that_keeps_up_is_not_reported():
    runner, hook = FakeRunner('throughput_fast', workers=4), DataThroughputHook(window=10,
                                                                                warmup=0)
    rng = np.random.default_rng(0)
    for _ in range(100):  # 5 ms of 100 waiting, with an outlier now and then
        slow = rng.random() < 0.05
        runner.step(hook, 0.5 if slow else 0.005, 0.6 if slow else 0.1)
    assert runner.logger.warnings == []
    with pytest.raises(ValueError, match='0 < max_wait < 1'):
        DataThroughputHook(max_wait=1.5)
