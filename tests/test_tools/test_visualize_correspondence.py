"""tools/visualize_correspondence.py in-process: identical views must match every patch to
itself (accuracy exactly 1, each key chosen once), with and without a checkpoint."""
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS
from PIL import Image

from densevit_mm.datasets import write_image_folder
from tests.conftest import load_tool

CONFIG = 'configs/pretrain/densevit_debug.py'
vc = load_tool('visualize_correspondence')


def identical_views(pipeline_input):
    """A 64 px picture as both views, each the whole image, unflipped (x1, y1, x2, y2,
    flipped, source height and width)."""
    img = np.asarray(Image.open(pipeline_input['img_path']).convert('RGB'))[..., ::-1]
    geometry = np.array([[0., 0., 64., 64., 0., 64., 64.]] * 2, np.float32)
    return dict(img=[img.copy(), img.copy()], view_geometry=geometry)


def test_the_config_pipeline_gives_two_views_and_their_geometry(tmp_path):
    write_image_folder(str(tmp_path), 1, 64, seed=0)
    out = vc.view_pipeline(Config.fromfile(CONFIG))(dict(img_path=str(tmp_path / '000000.png')))
    assert len(out['img']) == 2 and out['view_geometry'].shape == (2, 7)
    cfg = Config.fromfile(CONFIG)
    cfg.train_dataloader.dataset.pipeline = [dict(type='LoadImageFromFile')]
    with pytest.raises(SystemExit, match='no MultiViewWithGeometry'):
        vc.view_pipeline(cfg)


@pytest.mark.parametrize('checkpoint', [False, True])
def test_identical_views_match_patch_i_to_patch_i(tmp_path, monkeypatch, capsys, checkpoint):
    write_image_folder(str(tmp_path / 'images'), 3, 64, seed=0)
    extra = []
    if checkpoint:  # pretraining format: the key view goes through the key encoder
        model = MODELS.build(Config.fromfile(CONFIG).model)
        model.init_weights()
        model.target_encoder.module[0].load_state_dict(model.backbone.state_dict())
        torch.save(dict(state_dict=model.state_dict()), tmp_path / 'ckpt.pth')
        extra = ['--checkpoint', str(tmp_path / 'ckpt.pth')]
    monkeypatch.setattr(vc, 'view_pipeline', lambda cfg: identical_views)
    matches = []
    plain = vc.match_views
    monkeypatch.setattr(vc, 'match_views', lambda *a: matches.append(plain(*a)) or matches[-1])
    out = tmp_path / 'corr.png'
    monkeypatch.setattr(sys, 'argv', ['visualize_correspondence.py', CONFIG,
                                      str(tmp_path / 'images'), '--out', str(out), *extra])
    vc.main()
    assert len(matches) == 3
    for match, grid, tokens in matches:
        assert grid == (4, 4) and tokens.shape == (16, 192)
        assert torch.equal(match, torch.arange(16))
    stdout = capsys.readouterr().out
    assert 'correspondence accuracy (within one patch) over 3 images: 1.000;' in stdout
    assert 'images: 0.062\n' in stdout  # hub share 1/16: every key patch chosen once
    with Image.open(out) as image:
        assert image.format == 'PNG' and image.size == (960, 480)  # 8 x 4 in at 120 dpi


def test_another_pretrainings_backbone_sees_both_views(tmp_path):
    """--backbone-checkpoint (a peer's checkpoint: MoCo v3, MAE ...): its backbone, found as
    the transfer configs find it, replaces every backbone tensor and also takes the key view."""
    source = MODELS.build(Config.fromfile(CONFIG).model)
    source.init_weights()
    backbone = {f'backbone.{k}': v + 1 for k, v in source.backbone.state_dict().items()}
    torch.save(dict(state_dict={**backbone, 'neck.decoder.weight': torch.zeros(3)}),
               tmp_path / 'peer.pth')
    model, key_backbone = vc.load_model(Config.fromfile(CONFIG), None, str(tmp_path / 'peer.pth'))
    assert key_backbone is model.backbone
    state = model.backbone.state_dict()
    assert len(state) == len(backbone) and all(
        torch.equal(state[k[len('backbone.'):]], v) for k, v in backbone.items())
