import os.path as osp
import re
import subprocess
import sys

import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS
from PIL import Image

from densevit_mm.datasets import write_image_folder


def test_writes_a_picture_and_reports_accuracy(tmp_path, repo_root):
    write_image_folder(str(tmp_path / 'images'), 3, 64, seed=0)
    config = osp.join(repo_root, 'configs/pretrain/densevit_debug.py')
    # a pretraining-format checkpoint: the tool uses the key encoder for the key view
    cfg = Config.fromfile(config)
    model = MODELS.build(cfg.model)
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'ckpt.pth')
    for extra in ([], ['--checkpoint', str(tmp_path / 'ckpt.pth')]):
        out = tmp_path / f'corr{len(extra)}.png'
        result = subprocess.run(
            [sys.executable, osp.join(repo_root, 'tools/visualize_correspondence.py'), config,
             str(tmp_path / 'images'), '--out', str(out), *extra],
            capture_output=True, text=True, cwd=repo_root)
        assert result.returncode == 0, result.stderr[-2000:]
        accuracy = float(re.search(r'over 3 images: ([0-9.]+)', result.stdout).group(1))
        assert 0 <= accuracy <= 1
        rank = float(re.search(r'RankMe of the patch tokens over 3 images: ([0-9.]+) \(of at most '
                               r'192\)', result.stdout).group(1))
        assert 1 <= rank <= 192
        with Image.open(out) as image:
            assert image.format == 'PNG' and image.size[0] > 200
