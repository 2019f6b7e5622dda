"""DINO and iBOT: the losses against slow loops of the official equations, the centres, the
EMA teacher, the block-wise masks, and one real training run of each built-in config."""
import copy
import glob
import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmpretrain.registry import MODELS

from densevit_mm.datasets import write_image_folder
from densevit_mm.models.selfsup import DINO, DINOLoss, iBOT, iBOTLoss
from densevit_mm.models.selfsup.ibot import blockwise_mask, draw_mask_ratio

CONFIGS = {'dino': 'configs/builtin/dino-mini_pretrain_builtin.py',
           'ibot': 'configs/builtin/ibot-mini_pretrain_builtin.py'}
# cls_token, pos_embed, patch projection (2), 4 layers x 12, final LayerNorm (2)
MINI_BACKBONE_TENSORS = 2 + 2 + 4 * 12 + 2


def official_dino_loss(student, teacher, center, temp, ncrops, student_temp=0.1):
    """main_dino.py's DINOLoss.forward, loop for loop, on (V*B, K) / (2*B, K) rows."""
    student_out = (student / student_temp).chunk(ncrops)
    teacher_out = F.softmax((teacher - center) / temp, dim=-1).chunk(2)
    total, terms = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            total += torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
            terms += 1
    return total / terms


def set_runtime(epoch=0, it=0, max_iters=10):
    hub = MessageHub.get_current_instance()
    for key, value in dict(epoch=epoch, iter=it, max_iters=max_iters).items():
        hub.update_info(key, value)


def test_teacher_temperature_follows_the_official_per_epoch_schedule():
    loss = DINOLoss(8, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=4)
    official = np.concatenate((np.linspace(0.04, 0.07, 4), np.ones(6) * 0.07))
    assert [loss.teacher_temp_at(e) for e in range(10)] == pytest.approx(official.tolist())
    one = DINOLoss(8, warmup_teacher_temp_epochs=1)
    assert (one.teacher_temp_at(0), one.teacher_temp_at(1)) == (0.04, 0.07)


def test_dino_loss_and_centre_equal_the_official_loop():
    torch.manual_seed(0)
    V, B, K = 5, 3, 11
    loss_fn = DINOLoss(K, warmup_teacher_temp_epochs=3).double()
    loss_fn.center.normal_()
    center = loss_fn.center.clone()
    student = torch.randn(V, B, K, dtype=torch.float64) * 3
    teacher = torch.randn(2, B, K, dtype=torch.float64) * 3
    loss = loss_fn(student, teacher, epoch=1)  # temperature 0.055, mid warm-up
    expected = official_dino_loss(student.flatten(0, 1), teacher.flatten(0, 1), center, 0.055,
                                  V)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    # the centre moves after the loss: 0.9 c + 0.1 * mean over both views and the batch
    torch.testing.assert_close(loss_fn.center, 0.9 * center + 0.1 * teacher.flatten(0, 1).mean(
        0, keepdim=True), rtol=1e-12, atol=1e-12)
    # a uniform student costs ln K whatever the teacher: the chance level of loss_cls
    uniform = loss_fn(torch.zeros(V, B, K, dtype=torch.float64), teacher, epoch=5)
    assert float(uniform) == pytest.approx(math.log(K), rel=1e-12)


def test_dino_loss_skips_only_same_view_pairs():
    # the pairs are (teacher view q, student view v) for v != q: the student's copies of
    # the teacher's views meet only the other teacher view
    K = 6
    loss_fn = DINOLoss(K, student_temp=1., teacher_temp=1., warmup_teacher_temp=1.)
    teacher = torch.randn(2, 4, K)
    far = torch.full((1, 4, K), 0.)
    far[..., 0] = 50.  # a confident student view that disagrees with the teacher
    student = torch.cat([teacher, far])  # views 0, 1 copy the teacher's views 0, 1
    loss = loss_fn(student, teacher, epoch=0)
    expected = official_dino_loss(student.flatten(0, 1), teacher.flatten(0, 1),
                                  torch.zeros(1, K), 1., 3, student_temp=1.)
    torch.testing.assert_close(loss, expected)
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # (teacher, student): 2 x 3 minus the diagonal
    ce = [-(F.softmax(teacher[q], -1) * F.log_softmax(student[v], -1)).sum(-1).mean()
          for q, v in pairs]
    torch.testing.assert_close(loss, torch.stack(ce).mean())


def official_ibot_patch_loss(student_patch, teacher_patch, masks, center2, temp2,
                             student_temp=0.1):
    """main_ibot.py's iBOTLoss.forward, patch part (v == q), loop for loop."""
    G = len(masks)
    student_c = (student_patch / student_temp).chunk(G)
    teacher_c = F.softmax((teacher_patch - center2) / temp2, dim=-1).chunk(G)
    total, terms = 0, 0
    for q in range(G):
        loss2 = torch.sum(-teacher_c[q] * F.log_softmax(student_c[q], dim=-1), dim=-1)
        mask = masks[q].flatten(-2, -1)
        loss2 = torch.sum(loss2 * mask.float(), dim=-1) / mask.sum(dim=-1).clamp(min=1.0)
        total += loss2.mean()
        terms += 1
    return total / terms


def test_ibot_losses_and_centres_equal_the_official_loop():
    torch.manual_seed(1)
    V, G, B, H, W, K = 4, 2, 3, 2, 3, 7
    N = H * W
    loss_fn = iBOTLoss(K, warmup_teacher_temp_epochs=3).double()
    loss_fn.center.normal_()
    loss_fn.patch_center.normal_()
    center, center2 = loss_fn.center.clone(), loss_fn.patch_center.clone()
    fresh = copy.deepcopy(loss_fn)
    student_cls = torch.randn(V, B, K, dtype=torch.float64) * 3
    teacher_cls = torch.randn(G, B, K, dtype=torch.float64) * 3
    student_patch = torch.randn(G, B, N, K, dtype=torch.float64) * 3
    teacher_patch = torch.randn(G, B, N, K, dtype=torch.float64) * 3
    masks = torch.rand(G, B, H, W) < 0.4
    masks[0, 1] = False  # an unmasked image adds 0 to its view's batch mean
    masks[1, 2] = True
    loss_cls, loss_patch = loss_fn(student_cls, student_patch, teacher_cls, teacher_patch,
                                   masks.flatten(2), epoch=2)  # end of warm-up: 0.07
    expected_cls = official_dino_loss(student_cls.flatten(0, 1), teacher_cls.flatten(0, 1),
                                      center, 0.07, V)
    expected_patch = official_ibot_patch_loss(student_patch.flatten(0, 1),
                                              teacher_patch.flatten(0, 1),
                                              list(masks), center2, 0.07)
    torch.testing.assert_close(loss_cls, expected_cls, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss_patch, expected_patch, rtol=1e-12, atol=1e-12)
    # unmasked positions do not count: changing the student there changes nothing
    moved = student_patch.clone()
    moved[~masks.flatten(2)] += 5.
    _, again = fresh(student_cls, moved, teacher_cls, teacher_patch, masks.flatten(2), 2)
    torch.testing.assert_close(again, loss_patch, rtol=1e-12, atol=1e-12)
    # centres: the patch centre averages over positions, then the batch and views
    m_cls = teacher_cls.flatten(0, 1).mean(0, keepdim=True)
    m_patch = teacher_patch.flatten(0, 1).mean(1).mean(0).view(1, 1, K)
    torch.testing.assert_close(loss_fn.center, 0.9 * center + 0.1 * m_cls, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(loss_fn.patch_center, 0.9 * center2 + 0.1 * m_patch,
                               rtol=1e-12, atol=1e-12)


def tiny_model(kind='DINO'):
    cfg = dict(
        type=kind,
        backbone=dict(type='DenseViT', arch='densevit-debug', img_size=32, patch_size=16,
                      drop_path_rate=0.1),
        neck=dict(type='DINONeck', in_channels=192, out_channels=16, hid_channels=32,
                  bottleneck_channels=8, norm_last_layer=False),
        head=dict(type='iBOTLoss' if kind == 'iBOT' else 'DINOLoss', out_channels=16,
                  warmup_teacher_temp_epochs=1))
    model = MODELS.build(cfg)
    assert type(model) is (iBOT if kind == 'iBOT' else DINO)
    model.init_weights()
    return model


def views(batch=2):
    return [torch.randn(batch, 3, 32, 32) for _ in range(2)] + [
        torch.randn(batch, 3, 16, 16) for _ in range(2)]


@pytest.mark.parametrize('kind', ['DINO', 'iBOT'])
def test_teacher_gets_no_gradient_and_follows_the_ema_exactly(kind):
    torch.manual_seed(0)
    model = tiny_model(kind)
    teacher = dict(model.backbone.named_parameters(prefix='backbone'))
    teacher.update(model.neck.named_parameters(prefix='neck'))
    student = {name[len('student.'):]: p for name, p in model.student.named_parameters(
        prefix='student')}
    assert sorted(teacher) == sorted(student)
    for name in teacher:  # a copy of the student at the start
        torch.testing.assert_close(teacher[name], student[name], rtol=0, atol=0)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)

    max_iters = 10
    for it in range(3):
        set_runtime(epoch=1, it=it, max_iters=max_iters)  # epoch 1: last layer trains
        before = {name: p.detach().clone() for name, p in teacher.items()}
        after_step = {name: p.detach().clone() for name, p in student.items()}
        losses = model.loss(views(), [])
        sum(v for k, v in losses.items() if k.startswith('loss')).backward()
        assert all(p.grad is None and not p.requires_grad for p in teacher.values())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.values()
                   if p.requires_grad)
        # start of iteration it: the official update of iteration it - 1
        w = 0.004 * (1 + math.cos(math.pi * (it - 1) / max_iters)) / 2 if it else 0.
        for name, p in teacher.items():
            expected = before[name] * (1 - w) + after_step[name] * w
            torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
        optimizer.step()
        optimizer.zero_grad()
    assert model.student_weight(max_iters, max_iters) == 0.  # teacher m reaches 1


def test_last_layer_gets_zero_gradient_in_the_frozen_epoch():
    torch.manual_seed(0)
    model = tiny_model()
    set_runtime(epoch=0, it=0)
    model.loss(views(), [])['loss_cls'].backward()
    neck = model.student.neck
    assert neck.last_layer_v.grad.abs().max() == 0 and neck.last_layer_g.grad.abs().max() == 0
    assert neck.mlp[0].weight.grad.abs().sum() > 0


def test_mask_token_replaces_the_masked_patch_embeddings_before_the_position_embedding():
    torch.manual_seed(0)
    model = tiny_model('iBOT')
    with torch.no_grad():
        model.mask_token.normal_()
    backbone = model.student.backbone
    x = torch.randn(3, 3, 32, 32)
    mask = torch.tensor([[True, False, False, True], [False] * 4, [True] * 4])
    seen = []
    handle = backbone.layers[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with model.masked(mask):
        backbone(x)
    backbone(x)
    handle.remove()
    masked, plain = seen  # (B, 1 + N, C) tokens entering the first block
    pos = backbone.pos_embed[0, 1:]  # (N, C)
    torch.testing.assert_close(masked[:, 1:][mask], (model.mask_token[0, 0] + pos)[
        mask.nonzero()[:, 1]])
    torch.testing.assert_close(masked[:, 1:][~mask], plain[:, 1:][~mask])
    torch.testing.assert_close(masked[:, 0], plain[:, 0])


def test_blockwise_masks_stay_within_the_drawn_ratio():
    rng = random.Random(0)
    grid = (6, 6)
    shares = []
    for _ in range(500):
        ratio = rng.uniform(0.1, 0.5)
        mask = blockwise_mask(grid, ratio, rng=rng)
        assert mask.shape == grid and mask.sum() <= ratio * 36
        shares.append(mask.sum() / 36 / ratio)
    # iBOT's generator stops when no block fits the remaining budget: it gets most of it
    assert np.mean(shares) > 0.7
    ratios = [draw_mask_ratio((0.1, 0.5), 0.5, rng) for _ in range(4000)]
    masked = [r for r in ratios if r > 0]
    assert 0.47 < len(masked) / len(ratios) < 0.53  # masked with probability 0.5
    assert min(masked) >= 0.1 and max(masked) <= 0.5
    model = tiny_model('iBOT')
    masks = model.draw_masks(2000, (6, 6), 'cpu')
    assert masks.shape == (2000, 36) and masks.dtype == torch.bool
    counts = masks.sum(1)
    assert counts.max() <= 18  # never above 0.5 of the patches
    assert 0.4 < (counts > 0).float().mean() < 0.6


def test_views_must_be_two_globals_then_locals():
    model = tiny_model()
    set_runtime()
    with pytest.raises(ValueError, match='two global views first'):
        model.loss([torch.randn(2, 3, 32, 32)] * 3, [])
    with pytest.raises(ValueError, match='at least two views'):
        model.loss([torch.randn(2, 3, 32, 32)], [])
    with pytest.raises(TypeError, match='needs an iBOTLoss head'):
        MODELS.build(dict(
            type='iBOT', backbone=dict(type='DenseViT', arch='densevit-debug', img_size=32),
            neck=dict(type='DINONeck', in_channels=192, out_channels=16, hid_channels=32,
                      bottleneck_channels=8),
            head=dict(type='DINOLoss', out_channels=16)))


@pytest.mark.parametrize('name', ['dino', 'ibot'])
def test_config_trains_and_its_checkpoint_transfers_the_teacher(name, tmp_path, repo_root):
    write_image_folder(str(tmp_path / 'pretrain'), num_images=8, size=128, seed=0)
    work = tmp_path / 'work'
    result = subprocess.run(
        [sys.executable, '-m', 'densevit_mm.train', CONFIGS[name], '--work-dir', str(work),
         '--cfg-options', f'train_dataloader.dataset.data_root={tmp_path}',
         'train_cfg.max_epochs=1', 'default_hooks.checkpoint.interval=1',
         'default_hooks.logger.interval=1', 'train_dataloader.batch_size=4'],
        cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    scalars = glob.glob(str(work / '*' / 'vis_data' / 'scalars.json'))
    logged = [json.loads(line) for path in scalars for line in open(path)]
    keys = ['loss_cls', 'loss_patch'] if name == 'ibot' else ['loss_cls']
    assert [row['iter'] for row in logged] == [1, 2]  # 8 images, batch 4
    for row in logged:
        assert all(math.isfinite(row[k]) for k in keys + ['loss'])
        assert row['loss'] == pytest.approx(sum(row[k] for k in keys), rel=1e-4)
        assert row['teacher_temp'] == pytest.approx(0.04)  # epoch 0 of the warm-up

    checkpoint = str(work / 'epoch_1.pth')
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    seg = Config.fromfile('configs/builtin/fpn_densevit-mini_builtin-seg.py',
                          import_custom_modules=False)
    backbone_cfg = dict(seg.model.backbone, type='DenseViT')
    backbone_cfg['init_cfg'] = dict(backbone_cfg['init_cfg'], checkpoint=checkpoint)
    backbone = MODELS.build(backbone_cfg)
    backbone.init_weights()
    loaded = backbone.state_dict()
    assert len(loaded) == MINI_BACKBONE_TENSORS
    assert sum(k.startswith('backbone.') for k in state) == MINI_BACKBONE_TENSORS
    for key, value in loaded.items():
        if key != 'pos_embed':  # resized to the 128-pixel grid
            torch.testing.assert_close(value, state[f'backbone.{key}'], rtol=0, atol=0)
    # the file holds two different backbones: the one loaded is the teacher's (backbone.,
    # which test_teacher_gets_no_gradient_and_follows_the_ema_exactly checks), not the student
    key = 'layers.0.attn.qkv.weight'
    assert not torch.equal(loaded[key], state[f'student.backbone.{key}'])
