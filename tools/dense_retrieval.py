"""Score frozen patch features by dense nearest-neighbour retrieval (Hummingbird protocol).

    python tools/dense_retrieval.py configs/builtin/linear_densevit-mini_builtin-seg.py \
        --data-root data/builtin/ade/ADEChallengeData2016 \
        [--checkpoint work_dirs/builtin/pretrain_densevit/epoch_8.pth] [--seeds 0 1 2] \
        [--k 30] [--temperature 0.02] [--passes 10] [--layer -1] [--input-size 128] \
        [--bank-size N] [--search faiss|exact] [--out result.json] [--cfg-options ...]

No head is trained: a memory bank of the training images' patch features (``--passes``
augmented passes) with their label histograms labels every validation patch by its ``--k``
nearest bank patches (densevit_mm/evaluation/dense_retrieval.py).  CONFIG is a segmentation
config of this project: its backbone, normalisation, dataset layout (relative to
``--data-root``), classes and ignore index are used.  Without ``--checkpoint`` the backbone is
random, for each seed the init a training run of CONFIG with ``model.backbone.init_cfg=None``
and that seed starts from; ``--oracle`` replaces the backbone by perfect features (the one-hot
of each patch's majority label).  Each seed draws its own bank augmentation.
"""
import argparse
import json
import os
import os.path as osp
import time

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

import densevit_mm  # noqa: F401
from densevit_mm.evaluation import (LABEL_MODES, BackboneFeatures, build_frozen_backbone,
                                    evaluate_dense_retrieval, knn_search, knn_search_exact,
                                    label_oracle_features,
                                    load_split, patch_ceiling, retrieval_spec, summarize_seeds)
from densevit_mm.runner_args import CfgOptionsAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='mmseg segmentation config of this project')
    parser.add_argument('--checkpoint', help='backbone weights (prefix backbone.); '
                        'default: random init')
    parser.add_argument('--oracle', action='store_true',
                        help='perfect features instead of a backbone: one-hot majority labels')
    parser.add_argument('--data-root', required=True,
                        help='the dataset folder the config\'s data_prefix paths start from')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--k', type=int, default=30, help='neighbours per patch')
    parser.add_argument('--temperature', type=float, default=0.02)
    parser.add_argument('--passes', type=int, default=10,
                        help='augmented passes over the training images for the bank')
    parser.add_argument('--no-augment', action='store_true',
                        help='bank passes see the whole image (no crop, no flip)')
    parser.add_argument('--bank-size', type=int,
                        help='keep this many random bank patches (default: all)')
    parser.add_argument('--bank-labels', choices=LABEL_MODES, default='histogram',
                        help='what a bank patch carries: its label histogram or the one-hot '
                        'of its majority label')
    parser.add_argument('--layer', type=int, nargs='+', default=[-1],
                        help='backbone layer(s); several are concatenated')
    parser.add_argument('--input-size', type=int, default=128,
                        help='images are resized to this square size')
    parser.add_argument('--search', choices=('faiss', 'exact'), default='faiss',
                        help='faiss (IndexFlatIP) or exact: the full similarity matrix in '
                        'torch, the reference (its memory grows with bank x queries)')
    parser.add_argument('--out', help='JSON result file')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='config overrides')
    args = parser.parse_args(argv)
    if args.oracle and args.checkpoint:
        parser.error('--oracle uses no backbone: drop --checkpoint')
    for name in ('k', 'passes', 'input_size', 'bank_size'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be positive, got {value}')
    if args.temperature <= 0:
        parser.error(f'--temperature must be positive, got {args.temperature}')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    # the current logger: mmengine's per-tensor init report would drown the progress lines
    MMLogger.get_instance('dense_retrieval', log_level='WARNING')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        spec = retrieval_spec(cfg)
        train, classes = load_split(cfg, args.data_root, 'train', spec)
        val, _ = load_split(cfg, args.data_root, 'val', spec)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f'dense_retrieval: {err}')
    print(f'{len(train)} training and {len(val)} validation images, '
          f'{spec["num_classes"]} classes', flush=True)
    settings = dict(config=args.config, checkpoint=args.checkpoint, oracle=args.oracle,
                    data_root=args.data_root, seeds=args.seeds, k=args.k,
                    temperature=args.temperature, passes=args.passes,
                    augment=not args.no_augment, bank_size=args.bank_size,
                    bank_labels=args.bank_labels, layer=args.layer,
                    input_size=args.input_size, search=args.search, num_train=len(train),
                    num_val=len(val))
    runs = []
    for seed in args.seeds:
        if args.oracle:
            patch_size = cfg.model.backbone.get('patch_size', 16)
            feature_fn = label_oracle_features(patch_size, spec['num_classes'],
                                               spec['ignore_index'])
        else:
            try:
                backbone = build_frozen_backbone(cfg, args.checkpoint, seed)
            except (ValueError, FileNotFoundError) as err:
                raise SystemExit(f'dense_retrieval: {err}')
            patch_size = backbone.patch_size
            feature_fn = BackboneFeatures(backbone, args.layer)
        try:
            result = evaluate_dense_retrieval(
                feature_fn, train, val, spec['num_classes'], patch_size, seed,
                input_size=args.input_size, passes=args.passes, k=args.k,
                temperature=args.temperature, bank_size=args.bank_size,
                augment=not args.no_augment, label_mode=args.bank_labels,
                ignore_index=spec['ignore_index'],
                search=knn_search_exact if args.search == 'exact' else knn_search)
        except ValueError as err:
            raise SystemExit(f'dense_retrieval: {err}')
        runs.append(dict(seed=seed, **result))
        print(f'seed {seed}: mIoU {result["mIoU"]:.2f} (bank of {result["bank_patches"]} '
              f'patches, {time.perf_counter() - start:.1f} s)', flush=True)
    ceiling = patch_ceiling(val, spec['num_classes'], patch_size, args.input_size,
                            ignore_index=spec['ignore_index'])
    summary = summarize_seeds(runs)
    report = dict(**summary, mIoU_per_seed=[r['mIoU'] for r in runs], runs=runs,
                  classes=classes,
                  patch_ceiling_mIoU=ceiling['mIoU'], settings=settings,
                  wall_time_s=time.perf_counter() - start)
    print(f'mIoU {summary["mIoU_mean"]:.2f} ± {summary["mIoU_std"]:.2f} over '
          f'{len(runs)} seeds (a perfect patch classifier at {args.input_size} px: '
          f'{ceiling["mIoU"]:.2f}); {report["wall_time_s"]:.1f} s', flush=True)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    main()
