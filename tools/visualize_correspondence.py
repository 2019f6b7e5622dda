"""Draw the patch correspondence the dense loss uses, and measure how often it is right.

    python tools/visualize_correspondence.py configs/pretrain/densevit_s.py IMAGE_OR_FOLDER \
        [--checkpoint work_dirs/densevit_s/epoch_200.pth | --backbone-checkpoint MAE.pth] \
        [--out corr.png] [--num-images 32] \
        [--cfg-options model.match_centering=True ...]

Two augmented views of an image (the config's own pretraining augmentation) go through the
backbone (query view) and the momentum encoder (key view; the backbone itself without a
checkpoint); every query patch is joined to the key patch the loss pairs it with (argmax
cosine, with the config's match_layer / match_centering).  Green lines land
within one patch of the true geometric match (known from the crop boxes), red ones do not;
patches whose true match lies outside the key view are not drawn.  The accuracy printed is
over ``--num-images`` images of the folder (one view pair each), and so is the RankMe
(effective rank) of the backbone's last-layer patch tokens of the query views: a
representation collapsed to a few directions scores near that number -- and the hub share:
the share of a pair's matches that go to its single most-chosen key patch (1/N when spread).
"""
import argparse
import glob
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmengine.runner import set_random_seed
from mmpretrain.registry import MODELS

import densevit_mm  # noqa: F401
from densevit_mm.checkpoint import load_checkpoint_file, load_densevit_state_dict
from densevit_mm.datasets import IMAGE_EXTENSIONS
from densevit_mm.evaluation import (correspondence_accuracy, hub_share, rankme,
                                   true_correspondence)
from densevit_mm.runner_args import CfgOptionsAction


def load_model(cfg: Config, checkpoint=None, backbone_checkpoint=None):
    """The config's model with ``checkpoint`` (this model's pretraining: the key view goes
    through its key encoder), or with ``backbone_checkpoint``'s backbone (any pretraining the
    transfer configs read: it sees both views), or at random init (the same for both)."""
    # as mmengine's Runner does: the top-level data_preprocessor belongs to the model
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(cfg.model)
    key_backbone = model.backbone
    if checkpoint:
        state = load_checkpoint_file(checkpoint)['state_dict']
        model.load_state_dict(state, strict=True)
        key_backbone = model.target_encoder.module[0]
    elif backbone_checkpoint:
        model.init_weights()
        state, _ = load_densevit_state_dict(backbone_checkpoint)
        model.backbone.load_state_dict(state, strict=True)
    else:
        model.init_weights()
    model.eval()
    return model, key_backbone


def view_pipeline(cfg: Config) -> Compose:
    pipeline = cfg.train_dataloader.dataset.pipeline
    if not any(t['type'] == 'MultiViewWithGeometry' for t in pipeline):
        raise SystemExit('the config pipeline has no MultiViewWithGeometry: the view geometry '
                         'is needed to know the true matches')
    return Compose([t for t in pipeline if t['type'] != 'PackInputs'])


@torch.no_grad()
def match_views(model, key_backbone, views):
    """Match the patches of two BGR uint8 views.

    Returns:
        tuple: ``(N,)`` matches, the grid, and the ``(N, C)`` query patch tokens.
    """
    # the training preprocessor: BGR -> RGB and normalisation, one (1, 3, H, W) batch per view
    view_q, view_k = model.data_preprocessor(dict(
        inputs=[torch.from_numpy(v.copy()).permute(2, 0, 1)[None] for v in views],
        data_samples=None), False)['inputs']
    q_out, k_out = model.backbone(view_q), key_backbone(view_k)
    match = model.match_patches(q_out, k_out)[0]  # (N,): the loss's positives
    grid = tuple(s // model.backbone.patch_size for s in views[0].shape[:2])
    return match, grid, q_out[-1][1][0]


def draw(views, geometry, match, grid, accuracy, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    h, w = views[0].shape[:2]
    canvas = np.concatenate([views[0], np.full((h, w // 8, 3), 255, np.uint8), views[1]],
                            axis=1)[..., ::-1]  # BGR -> RGB
    offset = w + w // 8
    truth, inside = true_correspondence(geometry[0:1], geometry[1:2], grid)
    gh, gw = grid
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.imshow(canvas)
    for i in range(gh * gw):
        if not inside[0, i]:
            continue
        j, t = int(match[i]), int(truth[0, i])
        good = abs(j // gw - t // gw) <= 1 and abs(j % gw - t % gw) <= 1
        y0, x0 = (i // gw + 0.5) * h / gh, (i % gw + 0.5) * w / gw
        y1, x1 = (j // gw + 0.5) * h / gh, (j % gw + 0.5) * w / gw + offset
        ax.plot([x0, x1], [y0, y1], color='#2ca02c' if good else '#d62728', lw=0.8, alpha=0.8)
    ax.set_title(f'query view -> key view: {accuracy:.0%} of matches within one patch')
    ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='pretraining config (model and view augmentation)')
    parser.add_argument('images', help='an image, or a folder of images')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--checkpoint', help='pretraining checkpoint of this config (default: '
                         'random init)')
    weights.add_argument('--backbone-checkpoint', help='the backbone of another pretraining '
                         '(MoCo v3, MAE, DINO, iBOT, timm ...; as the transfer configs read '
                         'it), for both views')
    parser.add_argument('--out', default='correspondence.png')
    parser.add_argument('--num-images', type=int, default=32,
                        help='images of the folder used for the accuracy')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='config overrides the checkpoint was trained with, e.g. '
                        'model.match_centering=True or a queue length')
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    set_random_seed(args.seed)  # python, numpy and torch: the view augmentation uses all
    model, key_backbone = load_model(cfg, args.checkpoint, args.backbone_checkpoint)
    pipeline = view_pipeline(cfg)
    files = [args.images] if osp.isfile(args.images) else sorted(
        f for f in glob.glob(osp.join(args.images, '**', '*'), recursive=True)
        if f.lower().endswith(IMAGE_EXTENSIONS))[:args.num_images]
    if not files:
        raise SystemExit(f'no images found at {args.images}')

    hits, hubs, tokens, first = [], [], [], None
    for path in files:
        out = pipeline(dict(img_path=path))
        geometry = torch.from_numpy(out['view_geometry'])  # (2, 7)
        match, grid, q_patch = match_views(model, key_backbone, out['img'])
        tokens.append(q_patch)
        hubs.append(float(hub_share(match[None], match.numel())))
        acc = correspondence_accuracy(match[None], geometry[0:1], geometry[1:2], grid)
        if not torch.isnan(acc):
            hits.append(float(acc))
        if first is None:
            first = (out['img'], geometry, match, grid, float(acc))
    accuracy = float(np.mean(hits)) if hits else float('nan')
    draw(*first[:4], first[4], args.out)
    print(f'correspondence accuracy (within one patch) over {len(hits)} images: '
          f'{accuracy:.3f}; picture of {osp.basename(files[0])}: {args.out}')
    print(f'RankMe of the patch tokens over {len(files)} images: '
          f'{rankme(torch.cat(tokens)):.1f} (of at most {model.backbone.embed_dims})')
    print(f'hub share (most-chosen key patch, share of a pair\'s matches) over {len(files)} '
          f'images: {np.mean(hubs):.3f}')


if __name__ == '__main__':
    main()
