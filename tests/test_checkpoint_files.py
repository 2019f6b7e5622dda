"""Checkpoint files: atomic writes, errors that say what a file is, where --resume starts."""
import logging
import os
import os.path as osp
import time

import pytest
import torch

from mmengine.config import Config

from densevit_mm.checkpoint import (CheckpointFileError, atomic_save, atomic_write_text,
                                    check_config_checkpoints, describe_file, describe_non_finite,
                                    load_checkpoint_file, load_densevit_state_dict, plan_resume)


def save(path, **extra):
    """A resumable checkpoint as mmengine writes one (meta, state_dict, optimizer)."""
    ckpt = dict(meta=dict(epoch=1, iter=10), state_dict=dict(w=torch.ones(3)), optimizer={})
    ckpt.update(extra)
    torch.save(ckpt, path)
    return str(path)


def truncate(path):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


@pytest.fixture
def files(tmp_path):
    save(tmp_path / 'good.pth')
    truncate(save(tmp_path / 'cut.pth'))
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'notes.pth').write_text('see the README\n')
    (tmp_path / 'photo.pth').write_bytes(b'\xff\xd8\xff\xe0' + bytes(100))
    return tmp_path


@pytest.mark.parametrize('name,what', [
    ('good.pth', 'a zip archive of'),
    ('cut.pth', 'a zip archive cut short'),
    ('empty.pth', 'an empty file (0 bytes)'),
    ('notes.pth', "a text file of 15 bytes starting 'see the README'"),
    ('photo.pth', 'a JPEG image'),
])
def test_describe_file(files, name, what):
    assert describe_file(str(files / name)).startswith(what)


@pytest.mark.parametrize('name,what', [
    ('cut.pth', 'it is a zip archive cut short'),
    ('empty.pth', 'it is an empty file'),
    ('notes.pth', 'it is a text file'),
    ('photo.pth', 'it is a JPEG image'),
])
def test_a_file_that_is_no_checkpoint_is_named_and_described(files, name, what):
    path = str(files / name)
    with pytest.raises(CheckpointFileError, match=f'{path} is not a readable PyTorch checkpoint: '
                                                  f'{what}'):
        load_checkpoint_file(path)
    with pytest.raises(CheckpointFileError, match=f'{path} is not a readable'):
        load_densevit_state_dict(path)  # the transfer configs' path
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_checkpoint_file(str(files / 'missing.pth'))


def test_a_checkpoint_with_python_objects_is_named_and_the_hint_is_no_tool_that_refuses_it_too(
        tmp_path):
    import argparse  # DINO's training checkpoints carry their argparse Namespace
    path = str(tmp_path / 'dino.pth')
    torch.save(dict(teacher={}, args=argparse.Namespace(arch='vit_small')), path)
    with pytest.raises(CheckpointFileError) as err:
        load_checkpoint_file(path)
    message = str(err.value)
    assert message.endswith("; it holds Python objects that safe loading refuses "
                            "(argparse.Namespace); if you trust its source, torch.load it with "
                            "weights_only=False and torch.save only its weights (e.g. its "
                            "'model' or 'state_dict' entry)")
    # tools/convert_checkpoint.py reads with the same safe loading: no use advising it
    assert 'convert_checkpoint' not in message
    assert '\x1b' not in message  # torch's bold escape codes


def train_config(**overrides):
    cfg = Config(dict(model=dict(backbone=dict(type='mmpretrain.DenseViT'))))
    cfg.merge_from_dict(overrides)
    return cfg


def test_config_checkpoints_are_read_before_the_run_builds_anything(files):
    good, notes = str(files / 'good.pth'), str(files / 'notes.pth')
    pretrained = dict(type='Pretrained', checkpoint=notes, prefix='backbone.')
    with pytest.raises(CheckpointFileError, match=f'^model.backbone.init_cfg.checkpoint: '
                                                  f'{notes} is not a readable PyTorch '
                                                  'checkpoint: it is a text file'):
        check_config_checkpoints(train_config(**{'model.backbone.init_cfg': pretrained}))
    with pytest.raises(CheckpointFileError, match=f'^load_from: {files / "cut.pth"} is not a '
                                                  'readable PyTorch checkpoint: it is a zip '
                                                  'archive cut short'):
        check_config_checkpoints(train_config(load_from=str(files / 'cut.pth')))
    missing = str(files / 'epoch_8.pth')
    with pytest.raises(FileNotFoundError) as err:
        check_config_checkpoints(train_config(**{'model.backbone.init_cfg': dict(
            pretrained, checkpoint=missing)}))
    assert str(err.value) == (f"model.backbone.init_cfg.checkpoint: checkpoint {missing!r} "
                              'does not exist (random init: --cfg-options '
                              'model.backbone.init_cfg=None)')
    # a resumed run reads its own checkpoint, not load_from, but still initialises the backbone
    check_config_checkpoints(train_config(load_from=notes), load_from=False)
    with pytest.raises(CheckpointFileError, match='^model.backbone.init_cfg.checkpoint: '):
        check_config_checkpoints(train_config(load_from=good, **{
            'model.backbone.init_cfg': pretrained}), load_from=False)
    # readable files, random init, other kinds of init and URLs left to mmengine pass
    check_config_checkpoints(train_config(load_from=good, **{
        'model.backbone.init_cfg': dict(pretrained, checkpoint=good)}))
    check_config_checkpoints(train_config(**{'model.backbone.init_cfg': None}))
    check_config_checkpoints(train_config(**{'model.backbone.init_cfg': [
        dict(type='TruncNormal', layer='Linear', std=.02)]}))
    check_config_checkpoints(train_config(load_from='https://example.org/epoch_8.pth'))


def test_a_transfer_checkpoint_with_nan_weights_is_refused_with_the_tensor_names(tmp_path):
    from mmpretrain.registry import MODELS
    backbone = MODELS.build(dict(type='DenseViT', arch='densevit-debug', img_size=32))
    state = {f'backbone.{k}': v.clone() for k, v in backbone.state_dict().items()}
    state['backbone.layers.0.attn.qkv.weight'][0, 0] = float('nan')
    state['backbone.pos_embed'][0, 0, 0] = float('inf')
    path = str(tmp_path / 'diverged.pth')
    torch.save(dict(state_dict=state), path)
    with pytest.raises(ValueError, match=r'refusing the backbone in .*diverged.pth: 2 '
                                         r'tensor\(s\) hold nan or inf \(pos_embed, '
                                         r'layers.0.attn.qkv.weight\)'):
        load_densevit_state_dict(path)


def test_describe_non_finite_names_up_to_ten():
    tensors = {f't{i}': torch.tensor([float('nan')]) for i in range(12)}
    tensors['ok'] = torch.ones(2)
    tensors['step'] = torch.tensor(3)  # integers cannot be non-finite
    text = describe_non_finite(tensors)
    assert text.startswith('12 tensor(s) hold nan or inf (t0, t1,') and text.endswith('and 2 more)')
    assert describe_non_finite({'ok': torch.ones(2)}) is None


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    atomic_save(dict(state_dict=dict(w=torch.ones(2))), path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('killed mid-save')

    with pytest.raises(RuntimeError, match='killed mid-save'):
        atomic_save(dict(state_dict=dict(w=torch.zeros(2)), other=Unpicklable()), path)
    assert torch.equal(load_checkpoint_file(path)['state_dict']['w'], torch.ones(2))
    assert os.listdir(tmp_path) == ['epoch_1.pth']  # no temporary file left
    atomic_write_text(str(tmp_path / 'last_checkpoint'), path)
    assert open(tmp_path / 'last_checkpoint').read() == path


def aged(*paths):
    """Give ``paths`` increasing modification times, oldest first."""
    now = time.time()
    for i, path in enumerate(paths):
        os.utime(path, (now - 100 + i, now - 100 + i))


def test_resume_in_an_empty_work_dir_starts_from_scratch_with_one_line(tmp_path):
    plan = plan_resume(str(tmp_path), 'auto')
    assert plan.checkpoint is None
    assert plan.notes == [(logging.INFO, f'--resume: no checkpoint in {tmp_path} yet: starting '
                                         'from scratch')]
    assert plan_resume(str(tmp_path / 'not_made_yet'), 'auto').checkpoint is None


def test_resume_without_last_checkpoint_takes_the_newest_checkpoint(tmp_path):
    paths = [save(tmp_path / f'epoch_{i}.pth') for i in (1, 2, 10)]
    aged(*paths)
    plan = plan_resume(str(tmp_path), 'auto')
    assert plan.checkpoint == paths[2]


def test_resume_skips_and_names_an_unreadable_newest_checkpoint(tmp_path):
    old, new = save(tmp_path / 'epoch_1.pth'), save(tmp_path / 'epoch_2.pth')
    aged(old, new)
    truncate(new)
    (tmp_path / 'last_checkpoint').write_text(new)
    plan = plan_resume(str(tmp_path), 'auto')
    assert plan.checkpoint == old
    assert plan.notes[0][0] == logging.WARNING
    assert plan.notes[0][1].startswith(f'--resume: skipping {new} is not a readable PyTorch '
                                       'checkpoint: it is a zip archive cut short')


def test_resume_skips_a_checkpoint_without_optimizer_state(tmp_path):
    old = save(tmp_path / 'iter_5.pth')
    new = str(tmp_path / 'iter_10.pth')
    torch.save(dict(meta={}, state_dict={}), new)
    aged(old, new)
    plan = plan_resume(str(tmp_path), 'auto')
    assert plan.checkpoint == old and "it has no ['optimizer']" in plan.notes[0][1]


def test_resume_never_starts_from_scratch_over_unreadable_checkpoints(tmp_path):
    first = save(tmp_path / 'epoch_1.pth')
    truncate(first)
    (tmp_path / 'epoch_2.pth').write_bytes(b'')
    aged(first, tmp_path / 'epoch_2.pth')
    with pytest.raises(CheckpointFileError, match=r'holds checkpoints but none can be resumed '
                                                  r'from: .*epoch_2.pth is not .* empty file .*'
                                                  r'epoch_1.pth is not .* zip archive cut short'):
        plan_resume(str(tmp_path), 'auto')


def test_an_explicit_resume_path_must_be_a_resumable_checkpoint(files):
    assert plan_resume(str(files), str(files / 'good.pth')).checkpoint == str(files / 'good.pth')
    with pytest.raises(CheckpointFileError, match='notes.pth is not a readable PyTorch '
                                                  'checkpoint: it is a text file'):
        plan_resume(str(files), str(files / 'notes.pth'))


def test_a_fresh_start_over_existing_checkpoints_says_so_loudly(tmp_path):
    save(tmp_path / 'epoch_3.pth')
    plan = plan_resume(str(tmp_path), None)
    assert plan.checkpoint is None
    (level, message), = plan.notes
    assert level == logging.WARNING and 'starts FROM SCRATCH' in message
    assert 'newest epoch_3.pth' in message and 'Pass --resume' in message


def test_last_checkpoint_written_from_another_directory_is_found(tmp_path):
    path = save(tmp_path / 'epoch_1.pth')
    (tmp_path / 'last_checkpoint').write_text('some/old/cwd/epoch_1.pth')
    assert osp.samefile(plan_resume(str(tmp_path), 'auto').checkpoint, path)
