"""``tools/train.py --resume`` knows what changed since the checkpoint: another model is
refused naming tensors and config keys; another global batch or data set is refused unless
accepted; another number of processes with the same global batch continues as before."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from densevit_mm.datasets import write_image_folder
from tests.test_tools.test_train import dist_train, write_test_config

EPOCHS = "dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=2)"
# 32 images: 4 steps of 8 per epoch; SIGTERM before iteration 6 stops in epoch 2
STOP_IN_EPOCH_2 = ("[dict(type='LambdaWarmupHook', start_iters=2), dict(type='RecordingHook'), "
                   "dict(type='FaultHook', fault='sigterm', iters=[5])]")
CHECKPOINTS = 'dict(checkpoint=dict(by_epoch=False, interval=100))'


def train(config, work, *args, repo_root):
    return subprocess.run([sys.executable, 'tools/train.py', config, '--work-dir', str(work),
                           *args], capture_output=True, text=True, timeout=300, cwd=repo_root,
                          env=dict(os.environ, PYTHONPATH=repo_root, OMP_NUM_THREADS='1'))


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture
def images(tmp_path, synthetic_root):
    root = tmp_path / 'data'
    shutil.copytree(synthetic_root, root)
    return str(root)


def test_another_model_is_refused_naming_tensors_and_config_keys(tmp_path, images, repo_root):
    config = write_test_config(tmp_path / 'cfg.py', images,
                               train_cfg="dict(type='IterBasedTrainLoop', max_iters=2)")
    work = tmp_path / 'work'
    assert train(config, work, repo_root=repo_root).returncode == 0
    ckpt = f'{work}/iter_2.pth'
    longer = train(config, work, '--resume', '--cfg-options', 'train_cfg.max_iters=4',
                   'model.head.loss_dense.queue_len=2048', repo_root=repo_root)
    assert longer.returncode == 1
    assert last_line(longer) == (
        f'tools/train.py: --resume: {ckpt} was trained with another model: '
        'head.loss_dense.queue: (1024, 128) in the checkpoint, (2048, 128) now. The config '
        "differs in model.head.loss_dense.queue_len: 1024 -> 2048. Resume with the config it "
        'was trained with, or start a new run that initialises from its weights '
        f"(load_from='{ckpt}', without --resume).")
    wider = train(config, work, '--resume', '--cfg-options', 'model.neck.hid_channels=512',
                  repo_root=repo_root)
    assert wider.returncode == 1
    assert ('neck.dense_mlp.0.weight: (256, 192) in the checkpoint, (512, 192) now'
            in last_line(wider))
    assert "The config differs in model.neck.hid_channels: 256 -> 512." in last_line(wider)
    # nothing was written over the checkpoint
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['iter_2.pth']


def test_another_global_batch_is_refused_unless_accepted_and_the_same_one_continues(
        tmp_path, images, repo_root):
    """2 processes x 4 stopped in epoch 2; 1 process x 4 is refused; 1 x 8 continues with
    the same images per step and ends where the uninterrupted 2 x 4 run ends."""
    straight = write_test_config(tmp_path / 'straight.py', images, train_cfg=EPOCHS,
                                 default_hooks=CHECKPOINTS)
    stopped = write_test_config(tmp_path / 'stopped.py', images, train_cfg=EPOCHS,
                                default_hooks=CHECKPOINTS, custom_hooks=STOP_IN_EPOCH_2)
    assert dist_train(straight, tmp_path / 'straight', repo_root).returncode == 0
    work = tmp_path / 'work'
    result = dist_train(stopped, work, repo_root)
    assert 'exitcode  : 143' in result.stderr  # torchrun then reports 1
    ckpt = f'{work}/preempted_iter_6.pth'
    assert os.path.isfile(ckpt)

    halved = train(straight, work, '--resume', repo_root=repo_root)
    assert halved.returncode == 1
    assert last_line(halved) == (
        f'tools/train.py: --resume: {ckpt} was trained with 2 process(es) x 4 images = global '
        'batch 8; this run has 1 process(es) x 4 = 4. Its lr and schedule were set for 8. '
        'Resume with that global batch (--cfg-options train_dataloader.batch_size=8 with 1 '
        'process(es)), or pass --accept-changes batch to continue with 4 at the same lr and '
        'iteration counts.')
    same = train(straight, work, '--resume', '--cfg-options', 'train_dataloader.batch_size=8',
                 repo_root=repo_root)
    assert same.returncode == 0, same.stderr[-3000:]
    assert ('--resume: 2 process(es) x 4 images = global batch 8 before, 1 process(es) x 8 = '
            '8 now: the same global batch, so the same images per step and the same schedule'
            in same.stdout)
    assert 'resuming inside epoch 2: its first 2 of 4 iterations were done' in same.stdout
    end, resumed = (torch.load(tmp_path / run / 'iter_8.pth', weights_only=True)['state_dict']
                    for run in ('straight', 'work'))
    for key, value in end.items():
        if key.endswith('.queue'):
            # the same keys, in another order: one process enqueues its 8 in batch order,
            # two processes rank 0's 4 then rank 1's
            ptr = int(end[f'{key}_ptr'])
            assert int(resumed[f'{key}_ptr']) == ptr == 8 * 8
            value, resumed[key] = (q[:ptr][q[:ptr].sum(1).argsort()] for q in (value,
                                                                               resumed[key]))
        torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_an_accepted_global_batch_change_continues_and_says_so(tmp_path, images, repo_root):
    config = write_test_config(tmp_path / 'cfg.py', images,
                               train_cfg="dict(type='IterBasedTrainLoop', max_iters=2)")
    work = tmp_path / 'work'
    assert train(config, work, repo_root=repo_root).returncode == 0
    result = train(config, work, '--resume', '--accept-changes', 'batch', '--cfg-options',
                   'train_dataloader.batch_size=8', 'train_cfg.max_iters=3', repo_root=repo_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("--resume: global batch 4 -> 8 (--accept-changes batch): the lr and the "
            "schedule's iteration counts stay as they were set for 4") in result.stdout


def test_a_changed_data_set_is_refused_unless_accepted(tmp_path, images, repo_root):
    config = write_test_config(tmp_path / 'cfg.py', images, train_cfg=EPOCHS,
                               default_hooks=CHECKPOINTS, custom_hooks=STOP_IN_EPOCH_2)
    work = tmp_path / 'work'
    assert train(config, work, repo_root=repo_root).returncode == 143
    ckpt = f'{work}/preempted_iter_6.pth'
    write_image_folder(str(tmp_path / 'more'), num_images=4, size=64, seed=1)
    for name in os.listdir(tmp_path / 'more'):
        shutil.copy(tmp_path / 'more' / name, f'{images}/pretrain/new_{name}')
    plain = write_test_config(tmp_path / 'plain.py', images, train_cfg=EPOCHS,
                              default_hooks=CHECKPOINTS)
    refused = train(plain, work, '--resume', repo_root=repo_root)
    assert refused.returncode == 1
    assert last_line(refused) == (
        f'tools/train.py: --resume: the training set changed since {ckpt} was written (32 '
        "images then, 36 now). Resuming would continue the interrupted epoch in the new set's "
        'order (some of its images seen twice, others never) and keep the schedule\'s epoch '
        'length. Restore the set it was trained on, or pass --accept-changes data to continue '
        'anyway.')
    # the same number of images, another list
    os.remove(f'{images}/pretrain/000000.png')
    for name in ('new_000001.png', 'new_000002.png', 'new_000003.png'):
        os.remove(f'{images}/pretrain/{name}')
    refused = train(plain, work, '--resume', repo_root=repo_root)
    assert '(32 images then and now, but another file list)' in last_line(refused)
    accepted = train(plain, work, '--resume', '--accept-changes', 'data', repo_root=repo_root)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert ('--resume: the training set changed (32 images then and now, but another file '
            'list; --accept-changes data)') in accepted.stdout
