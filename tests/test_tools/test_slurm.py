"""tools/slurm_train.sh on a real (one-node, CPU) Slurm cluster: 2 tasks through
``sbatch --requeue --signal=TERM@N``, as a preempted or time-limited job on a GPU cluster.
.ci/run starts the cluster (tools/ci/start_slurm_cluster.sh); elsewhere these are skipped."""
import os
import os.path as osp
import re
import subprocess
import sys
import time

import pytest
import torch

from tests.test_tools.test_train import free_port, write_test_config

pytestmark = pytest.mark.slurm
ITERS = 60


def job_state(job_id):
    text = subprocess.run(['scontrol', 'show', 'job', job_id], capture_output=True,
                          text=True).stdout
    fields = dict(re.findall(r'(\w+)=(\S*)', text))
    return fields.get('JobState'), int(fields.get('Restarts', 0)), fields.get('Reason')


def sbatch(tmp_path, repo_root, config, work, *options, timeout=900):
    """Submit tools/slurm_train.sh with 2 CPU tasks; wait for the job to end, starting a
    requeued job at once instead of after Slurm's requeue delay (two minutes here).
    Returns the final state and the number of restarts."""
    env = dict(os.environ, PYTHONPATH=repo_root, OMP_NUM_THREADS='1', MASTER_PORT=str(free_port()),
               PYTHON=sys.executable, GPUS='2', GPUS_PER_NODE='0', CPUS_PER_TASK='1', REQUEUE='1')
    wrap = (f'bash {repo_root}/tools/slurm_train.sh ci densevit-test {config} {work} --resume')
    submitted = subprocess.run(
        ['sbatch', '--parsable', '--ntasks=2', '--cpus-per-task=1', '--open-mode=append',
         f'--output={tmp_path}/slurm-%j.out', f'--chdir={repo_root}', *options, '--wrap', wrap],
        env=env, capture_output=True, text=True, check=True)
    job_id = submitted.stdout.strip().split(';')[0]
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            state, restarts, reason = job_state(job_id)
            steps = subprocess.run(['squeue', '-h', '-s', '-j', job_id], capture_output=True,
                                   text=True).stdout.strip()
            if state == 'PENDING' and reason == 'BeginTime' and not steps:
                time.sleep(2)  # the last run's processes end
                subprocess.run(['scontrol', 'update', f'JobId={job_id}', 'StartTime=now'],
                               check=True)
            if state in ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL'):
                return state, restarts, open(f'{tmp_path}/slurm-{job_id}.out').read()
            time.sleep(1)
    finally:
        subprocess.run(['scancel', job_id])
    raise AssertionError(f'job {job_id} still {job_state(job_id)} after {timeout} s')


def test_a_signalled_job_saves_requeues_resumes_and_ends_as_an_uninterrupted_run(
        tmp_path, synthetic_root, repo_root):
    train = dict(train_cfg=f"dict(type='IterBasedTrainLoop', max_iters={ITERS})",
                 default_hooks='dict(checkpoint=dict(interval=1000), '
                               'logger=dict(interval=1))')
    config = write_test_config(tmp_path / 'cfg.py', synthetic_root, **train)
    # the same run, its first allocation 2 s longer per iteration: 120 s, where Slurm
    # signals after 30-90 s (TERM 90 s before the 3-minute limit, up to 60 s early)
    slow = write_test_config(
        tmp_path / 'slow.py', synthetic_root,
        custom_hooks="[dict(type='LambdaWarmupHook', start_iters=2), dict(type='RecordingHook'), "
                     f"dict(type='FaultHook', fault='slow', iters=range({ITERS}), seconds=2, "
                     'first_slurm_run_only=True)]', **train)
    state, restarts, out = sbatch(tmp_path, repo_root, config, tmp_path / 'straight',
                                  '--time=30')
    assert (state, restarts) == ('COMPLETED', 0), out[-3000:]
    state, restarts, out = sbatch(tmp_path, repo_root, slow, tmp_path / 'requeued',
                                  '--time=3', '--signal=TERM@90', '--requeue')
    assert state == 'COMPLETED', out[-3000:]
    assert restarts >= 1, out[-3000:]
    stops = re.findall(r'SIGTERM: saved (\S+preempted_iter_(\d+)\.pth) after iteration (\d+) '
                       r'and stopped', out)
    assert len(stops) == restarts and all(0 < int(i) < ITERS for _, i, _ in stops), out[-3000:]
    assert out.count('requeueing job') == restarts
    assert f'--resume: resuming from {stops[0][0]}' in out

    for rank in (0, 1):
        straight, requeued = (torch.load(tmp_path / run / f'record_rank{rank}.pt',
                                         weights_only=True) for run in ('straight', 'requeued'))
        for name in ('head.loss_global', 'head.loss_dense'):
            assert requeued['queues'][name]['ptr'] == straight['queues'][name]['ptr']
            torch.testing.assert_close(requeued['queues'][name]['queue'],
                                       straight['queues'][name]['queue'], rtol=1e-5, atol=1e-6)
    straight, requeued = (torch.load(tmp_path / run / f'iter_{ITERS}.pth', weights_only=True)
                          for run in ('straight', 'requeued'))
    assert straight['state_dict'].keys() == requeued['state_dict'].keys()
    for key, value in straight['state_dict'].items():
        torch.testing.assert_close(requeued['state_dict'][key], value, rtol=1e-5, atol=1e-6,
                                   msg=key)
    assert not osp.exists(tmp_path / 'requeued' / 'preempted')


def test_a_job_that_fails_otherwise_is_not_requeued(tmp_path, synthetic_root, repo_root):
    config = write_test_config(
        tmp_path / 'cfg.py', synthetic_root,
        train_cfg="dict(type='IterBasedTrainLoop', max_iters=6)",
        default_hooks='dict(checkpoint=dict(interval=2))',
        custom_hooks="[dict(type='FaultHook', fault='nan_weight', iters=[2])]")
    state, restarts, out = sbatch(tmp_path, repo_root, config, tmp_path / 'work',
                                  '--time=5', '--signal=TERM@60', '--requeue')
    assert (state, restarts) == ('FAILED', 0), out[-3000:]
    assert 'not saving a checkpoint after iteration 4' in out
    assert 'requeueing' not in out
    assert sorted(f for f in os.listdir(tmp_path / 'work') if f.endswith('.pth')) == [
        'iter_2.pth']
