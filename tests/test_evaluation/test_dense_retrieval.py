"""Dense nearest-neighbour retrieval (Hummingbird protocol): faiss against the exact torch
reference, the label transfer against a slow loop, the label histograms, and the tool end to
end on a tiny generated ADE20K-layout set."""
import json
import math

import pytest
import torch
from mmengine.config import Config

from densevit_mm.datasets import write_ade20k_layout
from densevit_mm.evaluation import (BackboneFeatures, augmented_views, build_frozen_backbone, build_memory_bank,
                                    evaluate_dense_retrieval, knn_search, knn_search_exact,
                                    label_oracle_features, load_split, majority_labels,
                                    patch_ceiling, patch_label_histograms, retrieval_spec,
                                    transfer_labels)
from tests.conftest import REPO_ROOT, load_tool

CONFIG = f'{REPO_ROOT}/configs/builtin/linear_densevit-mini_builtin-seg.py'
DEBUG = ['--cfg-options', 'model.backbone.arch=densevit-debug']  # one layer: seconds


def test_faiss_search_equals_exact_reference():
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(500, 32, generator=gen) * torch.rand(500, 1, generator=gen)
    queries = torch.randn(64, 32, generator=gen)
    labels = torch.rand(500, 5, generator=gen).softmax(-1)
    sims, idx = knn_search(bank, queries, 10)
    ref_sims, ref_idx = knn_search_exact(bank, queries, 10)
    assert sims.shape == idx.shape == (64, 10)
    assert torch.equal(idx, ref_idx)  # same neighbours, same order
    # float32 dot products summed in another order: a few ulps of a cosine
    torch.testing.assert_close(sims, ref_sims, atol=1e-5, rtol=0)
    torch.testing.assert_close(transfer_labels(sims, idx, labels, 0.02),
                               transfer_labels(ref_sims, ref_idx, labels, 0.02),
                               atol=1e-4, rtol=0)


def test_search_refuses_k_beyond_the_bank():
    with pytest.raises(ValueError, match='k = 11 neighbours asked of a memory bank of 10'):
        knn_search(torch.randn(10, 4), torch.randn(3, 4), 11)
    with pytest.raises(ValueError, match='k = 0'):
        knn_search_exact(torch.randn(10, 4), torch.randn(3, 4), 0)


def test_transfer_labels_matches_a_slow_loop():
    gen = torch.Generator().manual_seed(1)
    sims = torch.rand(6, 4, generator=gen).sort(dim=1, descending=True).values
    idx = torch.randint(0, 20, (6, 4), generator=gen)
    bank_labels = torch.rand(20, 3, generator=gen).softmax(-1)
    scores = transfer_labels(sims, idx, bank_labels, 0.1)
    for q in range(6):
        norm = sum(math.exp(float(s) / 0.1) for s in sims[q])
        for c in range(3):
            expected = sum(math.exp(float(sims[q, j]) / 0.1) / norm
                           * float(bank_labels[idx[q, j], c]) for j in range(4))
            assert abs(float(scores[q, c]) - expected) < 1e-6


def test_label_histograms():
    labels = torch.full((1, 8, 16), 255)
    labels[0, :, :4] = 1  # patch 0: left half class 1, right half class 2
    labels[0, :, 4:8] = 2
    labels[0, :4, 8:12] = 0  # patch 1: a quarter class 0, a quarter class 3, half ignored
    labels[0, 4:, 8:12] = 3
    hist = patch_label_histograms(labels, 8, 4)
    assert hist.shape == (1, 2, 4)
    torch.testing.assert_close(hist[0], torch.tensor([[0., .5, .5, 0.], [.5, 0., 0., .5]]))
    empty = patch_label_histograms(torch.full((1, 8, 8), 255), 8, 4)
    assert torch.equal(empty, torch.zeros(1, 1, 4))  # no labelled pixel: no label
    hist[0, 0] = torch.tensor([.2, .5, .3, 0.])
    assert torch.equal(majority_labels(hist)[0], torch.tensor([[0., 1., 0., 0.],
                                                                [1., 0., 0., 0.]]))
    with pytest.raises(ValueError, match='labels outside'):
        patch_label_histograms(torch.full((1, 8, 8), 4), 8, 4)
    with pytest.raises(ValueError, match='not a multiple'):
        patch_label_histograms(torch.zeros(1, 8, 12, dtype=torch.long), 8, 4)


@pytest.fixture(scope='module')
def tiny_set(tmp_path_factory):
    return write_ade20k_layout(str(tmp_path_factory.mktemp('ade')), 8, 4, size=64)


def _debug_cfg():
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict({'model.backbone.arch': 'densevit-debug'})
    return cfg


def test_tool_equals_the_exact_search_reference(tiny_set, tmp_path):
    out = tmp_path / 'result.json'
    report = load_tool('dense_retrieval').main([
        CONFIG, '--data-root', tiny_set, '--seeds', '0', '1', '--passes', '2',
        '--input-size', '64', '--k', '5', '--out', str(out), *DEBUG])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert len(report['runs']) == 2 and len(report['per_class_iou']) == 5
    assert report['settings']['k'] == 5 and report['settings']['num_val'] == 4
    # the reference: the same bank, searched by the full similarity matrix
    cfg = _debug_cfg()
    spec = retrieval_spec(cfg)
    train, _ = load_split(cfg, tiny_set, 'train', spec)
    val, _ = load_split(cfg, tiny_set, 'val', spec)
    for seed, run in zip((0, 1), report['runs']):
        backbone = build_frozen_backbone(cfg, None, seed)
        ref = evaluate_dense_retrieval(BackboneFeatures(backbone, [-1]), train, val, 5, 16,
                                       seed, input_size=64, passes=2, k=5,
                                       search=knn_search_exact)
        assert run['mIoU'] == ref['mIoU']
        assert run['bank_patches'] == ref['bank_patches'] == 8 * 2 * 16
    # the tool's own reference route gives the same numbers
    exact = load_tool('dense_retrieval').main([
        CONFIG, '--data-root', tiny_set, '--seeds', '0', '1', '--passes', '2',
        '--input-size', '64', '--k', '5', '--search', 'exact', *DEBUG])
    assert exact['mIoU_per_seed'] == report['mIoU_per_seed']
    assert exact['settings']['search'] == 'exact' and report['settings']['search'] == 'faiss'
    assert report['mIoU_mean'] == pytest.approx(sum(report['mIoU_per_seed']) / 2)
    # random init: each seed its own weights
    assert report['mIoU_per_seed'][0] != report['mIoU_per_seed'][1]


def test_label_oracle_retrieves_pure_patches_perfectly(tiny_set):
    cfg = _debug_cfg()
    spec = retrieval_spec(cfg)
    train, _ = load_split(cfg, tiny_set, 'train', spec)
    val, _ = load_split(cfg, tiny_set, 'val', spec)
    oracle = label_oracle_features(16, 5)
    gen = torch.Generator().manual_seed(0)
    bank, bank_labels = build_memory_bank(
        oracle, augmented_views(train, 2, 64, gen), 16, 5, gen)
    images, labels = next(augmented_views(val, 1, 64, gen, augment=False))
    hist = patch_label_histograms(labels, 16, 5).flatten(0, 1)  # (4 * 16, 5)
    sims, idx = knn_search(bank, oracle(images, labels).flatten(0, 1), 30)
    pred = transfer_labels(sims, idx, bank_labels, 0.02).argmax(-1)
    pure = hist.max(-1).values == 1
    in_bank = bank_labels.argmax(-1).bincount(minlength=5)[hist.argmax(-1)] > 0
    assert (pure & in_bank).sum() >= 20
    # a one-class patch's neighbours all have that majority class, so their mean histogram
    # peaks at it
    assert torch.equal(pred[pure & in_bank], hist.argmax(-1)[pure & in_bank])
    # and the whole protocol with oracle features comes near the patch ceiling
    result = evaluate_dense_retrieval(oracle, train, val, 5, 16, 0, input_size=64, passes=2)
    ceiling = patch_ceiling(val, 5, 16, 64, label_mode='majority')
    assert result['mIoU'] > 0.8 * ceiling['mIoU']


def test_protocol_errors():
    from mmpretrain.registry import MODELS
    backbone = MODELS.build(dict(type='DenseViT', arch='densevit-debug', img_size=32,
                                 out_type='featmap'))
    images, labels = torch.zeros(1, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.long)
    assert BackboneFeatures(backbone, [-1])(images, labels).shape == (1, 4, 192)
    with pytest.raises(ValueError, match=r"layers \[5\] are not all among the backbone's 1"):
        BackboneFeatures(backbone, [5])(images, labels)
    samples = [(images[0], labels[0])]
    with pytest.raises(ValueError, match='input_size 40 is not a multiple of the patch size'):
        evaluate_dense_retrieval(label_oracle_features(16, 5), samples, samples, 5, 16, 0,
                                 input_size=40)
    with pytest.raises(ValueError, match='label_mode must be one of'):
        evaluate_dense_retrieval(label_oracle_features(16, 5), samples, samples, 5, 16, 0,
                                 input_size=32, k=1, label_mode='soft')


def test_tool_errors(tiny_set, tmp_path):
    tool = load_tool('dense_retrieval')
    with pytest.raises(SystemExit, match='data root .* does not exist'):
        tool.main([CONFIG, '--data-root', str(tmp_path / 'none'), *DEBUG])
    with pytest.raises(SystemExit, match='images/training does not exist'):
        tool.main([CONFIG, '--data-root', str(tmp_path), *DEBUG])
    bare = tmp_path / 'bare.py'
    bare.write_text(f"_base_ = ['{CONFIG}']\nmodel = dict(backbone=None)\n")
    with pytest.raises(SystemExit, match='no model.backbone'):
        tool.main([str(bare), '--data-root', tiny_set])
    with pytest.raises(SystemExit, match='k = 1000 neighbours asked of a memory bank of 128'):
        tool.main([CONFIG, '--data-root', tiny_set, '--seeds', '0', '--passes', '1',
                   '--input-size', '64', '--k', '1000', *DEBUG])
    with pytest.raises(SystemExit, match='checkpoint .* does not exist'):
        tool.main([CONFIG, '--data-root', tiny_set, '--checkpoint', str(tmp_path / 'x.pth'),
                   *DEBUG])


def test_random_init_is_the_start_of_a_training_run(tiny_set, tmp_path, monkeypatch):
    from mmengine.runner import IterBasedTrainLoop, Runner
    cfg = _debug_cfg()
    cfg.merge_from_dict({
        'model.backbone.init_cfg': None, 'model.backbone.out_indices': (0,),
        'model.backbone.frozen_stages': 1, 'randomness': dict(seed=3),
        'train_dataloader.dataset.data_root': tiny_set, 'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False})
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator', 'test_dataloader', 'test_cfg',
                'test_evaluator'):
        cfg[key] = None
    cfg.work_dir = str(tmp_path)
    # everything Runner.train does up to the first iteration, then stop
    monkeypatch.setattr(IterBasedTrainLoop, 'run', lambda loop: loop.runner.model)
    runner = Runner.from_cfg(cfg)
    started = runner.train().backbone.state_dict()
    ours = build_frozen_backbone(_debug_cfg(), None, 3).state_dict()
    assert started.keys() == ours.keys()
    for key in started:
        assert torch.equal(started[key], ours[key]), key
