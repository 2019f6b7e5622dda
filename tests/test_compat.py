"""One test per workaround in densevit_mm/compat.py: each fails if its workaround stops working."""
import importlib.metadata

import numpy as np
import pytest
import torch

from densevit_mm import compat


def test_mmcv_is_2_1_so_mmdet_and_mmseg_import():  # item 1
    import mmdet  # noqa: F401  (asserts mmcv < 2.2.0 at import)
    import mmseg  # noqa: F401
    assert importlib.metadata.version('mmcv').startswith('2.1.')


def test_mmcv_ops_are_compiled_and_run():  # item 2
    from mmcv.ops import nms, roi_align
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feat = torch.arange(16.).reshape(1, 1, 4, 4)
    out = roi_align(feat, torch.tensor([[0., 0., 0., 4., 4.]]), (2, 2), 1.0, 2, 'avg', True)
    torch.testing.assert_close(out, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))


def test_torchvision_matches_torch():  # item 3
    import torchvision
    keep = torchvision.ops.nms(torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]]),
                               torch.tensor([0.9, 0.8]), 0.5)
    assert keep.tolist() == [0]


def test_mmseg_text_dependencies_installed():  # item 4
    import ftfy  # noqa: F401
    import regex  # noqa: F401
    from mmseg.utils import tokenizer  # noqa: F401  (imports both)


def test_mmengine_checkpoint_resumes_with_weights_only(tmp_path):  # item 5
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('compat_test')
    hub.update_scalar('train/loss', 1.5)
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(message_hub=hub.state_dict(), meta=dict(seed=np.int64(3))), path)
    loaded = torch.load(path, weights_only=True)
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 1.5
    # safe loading itself stays on: arbitrary objects are still refused
    torch.save(dict(bad=compat.apply), tmp_path / 'bad.pth')
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(tmp_path / 'bad.pth')


@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
def test_color_jitter_with_hue_runs_under_numpy2(backend):  # item 6
    from mmpretrain.datasets.transforms import ColorJitter
    jitter = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, backend=backend)
    rng = np.random.default_rng(0)
    for _ in range(50):  # about half the draws have a negative hue factor
        img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        assert jitter.transform(dict(img=img))['img'].shape == (8, 8, 3)


def test_adjust_hue_shift_is_modular():  # item 6: a negative shift wraps round, as in NumPy 1
    import mmcv
    img = np.random.default_rng(1).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    assert mmcv.adjust_hue is compat.adjust_hue
    shifted = compat.adjust_hue(img, -0.1)
    import cv2
    h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV_FULL))
    h = (h.astype(int) + (-25) % 256) % 256  # int(-0.1 * 255) = -25
    expected = cv2.cvtColor(cv2.merge([h.astype(np.uint8), s, v]), cv2.COLOR_HSV2BGR_FULL)
    np.testing.assert_array_equal(shifted, expected)


def test_retrieval_metric_runs_without_np_in1d():  # item 7
    from mmpretrain.evaluation.metrics import RetrievalRecall
    pred = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
    recall = RetrievalRecall.calculate(pred, [[0], [2]], topk=(1, 2), target_indices=True)
    assert [float(r) for r in recall] == [50.0, 100.0]


@pytest.mark.skipif(torch.cuda.is_available(), reason='SyncBN is kept where CUDA is')
def test_syncbn_becomes_batchnorm_without_cuda():  # item 9
    import torch.nn as nn
    from types import SimpleNamespace
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4))
    runner = SimpleNamespace(model=nn.Module())
    runner.model.head = model
    weight = model[1].weight
    compat.revert_sync_batchnorm_without_cuda(runner)
    norms = [m for m in runner.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 1 and not isinstance(norms[0], nn.SyncBatchNorm)
    assert norms[0].weight is weight  # same parameters, so an optimiser or DDP still sees them
    assert runner.model.head(torch.randn(2, 3, 5, 5)).shape == (2, 4, 5, 5)
