"""Host synchronisations of the pretraining loop, counted on CPU: every read of a tensor value
to the host (``.item()``, ``bool(t)``, ``.tolist()`` ...) would wait for the GPU, so a step
may read once (the guarded decision) and the logs wait for the logging interval."""
import pytest
import torch

from tests.test_engine.test_long_runs import make_runner, record

# the recording hook reads the values it records: not the loop's own reads
COUNT_SYNCS = dict(type='HostSyncCountHook', ignore=['tests/fixtures'])


def reads(counts):
    return sum(n for key, n in counts.items() if key.startswith('read:'))


def collectives(counts):
    return {key.split(':')[1]: n for key, n in counts.items() if key.startswith('collective:')}


@pytest.mark.parametrize('amp', [None, 'bfloat16'])
def test_a_training_step_reads_the_device_once(tmp_path, synthetic_root, amp):
    """Logging every 4 iterations: iterations 3 and 7 read the logged values (one read for
    all of them) and iteration 7 checks the last checkpoint's tensors (one read for all);
    every other step reads once, for the guarded decision.  The first iteration reads a few
    more: the fused kernel's check, the key encoder's step count."""
    work = tmp_path / 'work'
    wrapper = dict(type='GuardedAmpOptimWrapper', dtype=amp) if amp else {}
    make_runner(work, synthetic_root, [COUNT_SYNCS], iters=8, interval=100,
                optim_wrapper=wrapper,
                default_hooks=dict(logger=dict(type='LoggerHook', interval=4))).train()
    counts = torch.load(work / 'host_syncs_rank0.pt', weights_only=True)
    per_step = {it: reads(counts[it]) for it in range(8)}
    assert {it: n for it, n in per_step.items() if it not in (0, 3, 7)} == \
        {1: 1, 2: 1, 4: 1, 5: 1, 6: 1}, counts
    assert (per_step[3], per_step[7]) == (2, 3), counts
    assert all(collectives(c) == {} for c in counts.values())  # one process
    # the values read late are the values of every step, in order
    rec = record(work)
    assert rec['logged']['train/loss'] == [rec['losses'][it]['loss'] for it in range(8)]
