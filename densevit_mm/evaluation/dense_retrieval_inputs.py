"""What the dense retrieval protocol (:mod:`.dense_retrieval`) takes from an mmseg
segmentation config: the backbone and its weights, the input normalisation, the labelled
splits, the number of classes and the ignore index."""
import copy
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .dense_retrieval import Sample

SPLITS = {'train': 'train_dataloader', 'val': 'val_dataloader'}
LOADERS = ('LoadImageFromFile', 'LoadAnnotations')


def retrieval_spec(cfg) -> Dict:
    """``num_classes``, ``ignore_index`` and the normalisation (``mean``, ``std``,
    ``bgr_to_rgb``) of a segmentation config, checked."""
    model = cfg.get('model') or {}
    if not model.get('backbone'):
        raise ValueError('the config has no model.backbone: give an mmseg segmentation '
                         'config of this project (e.g. configs/builtin/'
                         'linear_densevit-mini_builtin-seg.py)')
    head = model.get('decode_head') or {}
    head = head[0] if isinstance(head, (list, tuple)) else head
    if 'num_classes' not in head:
        raise ValueError('the config has no model.decode_head.num_classes: the protocol needs '
                         'the number of classes of the labels')
    pre = model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    if pre.get('mean') is None or pre.get('std') is None:
        raise ValueError('the config\'s data_preprocessor has no mean / std: the backbone\'s '
                         'input normalisation must be known')
    return dict(num_classes=int(head['num_classes']),
                ignore_index=int(head.get('ignore_index', 255)),
                mean=[float(v) for v in pre['mean']], std=[float(v) for v in pre['std']],
                bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)))


def build_frozen_backbone(cfg, checkpoint: Optional[str], seed: int) -> torch.nn.Module:
    """The config's backbone in eval mode, returning the feature maps of all its layers.

    With ``checkpoint``, its backbone (prefix ``backbone.``: a pretraining or segmentation
    checkpoint, or a backbone-only file) is loaded strictly.  Without one, the weights are
    random and exactly those a training run of this config with ``randomness.seed=seed`` and
    ``model.backbone.init_cfg=None`` starts from: mmengine's (0.10) Runner seeds, builds the
    whole segmentor, builds the train loop and only then initialises the weights.  The neck
    and head are built here too, because their construction draws from the same generator,
    and so does an ``IterBasedTrainLoop``'s build: it opens the data loader's iterator, which
    takes its base seed from the global generator (one int64 draw).  Checked against the
    frozen backbone of a linear-probe run from random init (bit-identical).
    """
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    model_cfg = copy.deepcopy(cfg.model)
    # all layers are taken below, whatever the config's protocol uses; neither draws weights
    model_cfg.backbone.update(out_indices=-1, frozen_stages=-1)
    if checkpoint is None:
        model_cfg.backbone.init_cfg = None
        model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
        set_random_seed(seed)
        model = MODELS.build(model_cfg)
        if (cfg.get('train_cfg') or {}).get('type') == 'IterBasedTrainLoop':
            torch.empty((), dtype=torch.int64).random_()  # the loop's iterator base seed
        model.init_weights()
        backbone = model.backbone
    else:
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
        model_cfg.backbone.init_cfg = dict(type='Pretrained', checkpoint=checkpoint,
                                           prefix='backbone.')
        backbone = MODELS.build(model_cfg.backbone)
        backbone.init_weights()
    if getattr(backbone, 'out_type', None) != 'featmap' or not hasattr(backbone, 'layers'):
        raise ValueError(f'the backbone {type(backbone).__name__} is not a ViT giving feature '
                         "maps (DenseViT with out_type='featmap' is expected)")
    backbone.out_indices = list(range(len(backbone.layers)))  # every layer, in order
    return backbone.eval()


def load_split(cfg, data_root: str, split: str, spec: Dict) -> Tuple[List[Sample], List[str]]:
    """The labelled images of ``split`` ('train' or 'val') of the config's dataset under
    ``data_root``, as ``(image (3, H, W) float normalised, label (H, W) long)`` pairs, and
    the dataset's class names.

    Only the config's file loading steps run (``LoadImageFromFile``, ``LoadAnnotations``,
    which applies ``reduce_zero_label``); the protocol does its own resizing and cropping.
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')  # mmseg's LoadAnnotations, not mmcv's
    if not osp.isdir(data_root):
        raise FileNotFoundError(f'data root {data_root} does not exist')
    dataset_cfg = copy.deepcopy(cfg[SPLITS[split]].dataset)
    for folder in dataset_cfg.get('data_prefix', {}).values():
        if not osp.isdir(osp.join(data_root, folder)):
            raise FileNotFoundError(
                f'{osp.join(data_root, folder)} does not exist: --data-root must be the '
                'folder the config\'s data_prefix paths are relative to (for the ADE20K '
                'layout, .../ADEChallengeData2016)')
    loaders = [t for t in cfg[SPLITS[split]].dataset.pipeline
               if t['type'].split('.')[-1] in LOADERS]
    dataset_cfg.update(data_root=data_root, pipeline=loaders)
    dataset = DATASETS.build(dataset_cfg)
    if len(dataset) == 0:
        raise ValueError(f'no labelled {split} images found under {data_root}')
    mean = torch.tensor(spec['mean']).view(3, 1, 1)
    std = torch.tensor(spec['std']).view(3, 1, 1)
    samples = []
    for i in range(len(dataset)):
        out = dataset[i]
        image = torch.from_numpy(np.ascontiguousarray(out['img'])).permute(2, 0, 1).float()
        if spec['bgr_to_rgb']:
            image = image.flip(0)
        samples.append(((image - mean) / std,
                        torch.from_numpy(out['gt_seg_map'].astype(np.int64))))
    return samples, list(dataset.metainfo.get('classes', []))
