"""Can the data pipeline feed a GPU?  Worker CPU time per image of the pretraining pipeline.

    python tools/benchmark_data.py [--config configs/pretrain/densevit_s.py]
        [--images FOLDER | --num-images 200] [--rounds 3] [--step-images-per-s R]
        [--out benchmark_data.json]

Runs the config's two-view training pipeline in this process on one core (one torch / OpenCV
thread, as one dataloader worker does) over ImageNet-like JPEGs: by default generated
500x375 photograph-like pictures (smooth shading, edges, texture, sensor noise; quality 90),
or the images of ``--images``.  Three variants, interleaved image by image:

- ``full``: the pipeline as configured (decode, two random resized crops, colour jitter,
  grayscale, Gaussian blur, flip, packing);
- ``geometric part``: the same without the photometric transforms (colour jitter,
  grayscale, blur): decode, crops, flip, packing -- what the workers would still do if the
  photometric part ran batched on the device;
- ``decode``: loading the image alone.

Reports CPU milliseconds per image, images/s per worker core, and the cores one GPU needs at
a step rate: ``--step-images-per-s`` (e.g. the images/s of ``tools/benchmark_pretrain.py
--device cuda``), or else 35% of the H200's 790 TFLOP/s spent on DenseViT-S's FLOPs per image.
"""
import argparse
import copy
import json
import os
import os.path as osp
import statistics
import tempfile
import time

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from PIL import Image

import densevit_mm  # noqa: F401
from densevit_mm.benchmark.flops import PEAK_TFLOPS, dense_branch_flops, vit_s_train_flops
from densevit_mm.datasets import IMAGE_EXTENSIONS

PHOTOMETRIC = {'ColorJitter', 'RandomGrayscale', 'GaussianBlur', 'Solarize'}
GPU_SHARE = 0.35  # of the compute limit, the step rate assumed without a measured one


def photo_like(rng: np.random.Generator, width: int = 500, height: int = 375) -> np.ndarray:
    """An RGB uint8 picture with what makes JPEG decoding and resizing cost what they cost
    on photographs: smooth shading, sharp edges, fine texture and noise."""
    coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)  # (H, W, 3)
    for _ in range(12):  # objects with hard edges
        center = (int(rng.integers(width)), int(rng.integers(height)))
        axes = (int(rng.integers(10, 120)), int(rng.integers(10, 120)))
        color = rng.uniform(0, 255, 3).tolist()
        cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    texture = cv2.GaussianBlur(rng.normal(0, 25, (height, width, 1)).astype(np.float32),
                               (0, 0), 1.5)
    img = img + texture[:, :, None] + rng.normal(0, 4, (height, width, 3))  # (H, W, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpegs(folder: str, count: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = osp.join(folder, f'{i:05d}.jpg')
        Image.fromarray(photo_like(rng)).save(path, quality=90)
        paths.append(path)
    return paths


def _without_photometric(transforms: list) -> list:
    kept = []
    for t in transforms:
        inner = {u['type'] for u in t.get('transforms', [])} if t['type'] == 'RandomApply' \
            else set()
        if t['type'] in PHOTOMETRIC or (inner and inner <= PHOTOMETRIC):
            continue
        if 'transforms' in t and t['type'] != 'RandomApply':  # MultiView: its view pipelines
            t = dict(t, transforms=[_without_photometric(v) for v in t['transforms']])
        kept.append(t)
    return kept


def pipelines(cfg: Config) -> dict:
    full = copy.deepcopy(cfg.train_dataloader.dataset.pipeline)
    return dict(full=Compose(full), **{'geometric part': Compose(_without_photometric(full))},
                decode=Compose([t for t in full if t['type'] == 'LoadImageFromFile']))


def cpu_ms_per_image(fns: dict, paths: list, rounds: int) -> dict:
    """Per variant: the median over rounds of the CPU time per image, interleaved image by
    image (the order rotates)."""
    names, per_round = list(fns), {name: [] for name in fns}
    for _ in range(rounds):
        spent = dict.fromkeys(names, 0.)
        for i, path in enumerate(paths):
            for name in names[i % len(names):] + names[:i % len(names)]:
                start = time.process_time()
                fns[name](dict(img_path=path))
                spent[name] += time.process_time() - start
        for name in names:
            per_round[name].append(1e3 * spent[name] / len(paths))
    return {name: statistics.median(v) for name, v in per_round.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default='configs/pretrain/densevit_s.py')
    parser.add_argument('--images', help='a folder of JPEGs (default: generated ones)')
    parser.add_argument('--num-images', type=int, default=200)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--step-images-per-s', type=float,
                        help='images/s one GPU trains at (default: 35%% of the H200 limit)')
    parser.add_argument('--out', default='benchmark_data.json')
    args = parser.parse_args()
    torch.set_num_threads(1)  # one worker, one core
    cv2.setNumThreads(1)
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    fns = pipelines(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        if args.images:
            paths = sorted(osp.join(args.images, f) for f in os.listdir(args.images)
                           if f.lower().endswith(IMAGE_EXTENSIONS))[:args.num_images]
            if not paths:
                raise SystemExit(f'no images in {args.images}')
        else:
            paths = write_jpegs(tmp, args.num_images)
        for fn in fns.values():  # warm-up: imports, first allocations
            fn(dict(img_path=paths[0]))
        ms = cpu_ms_per_image(fns, paths, args.rounds)
    flops = vit_s_train_flops(224) + dense_branch_flops(224)
    rate = args.step_images_per_s or GPU_SHARE * PEAK_TFLOPS * 1e12 / flops
    rate_source = ('given' if args.step_images_per_s else
                   f'{GPU_SHARE:.0%} of {PEAK_TFLOPS:.0f} TFLOP/s at '
                   f'{flops / 1e9:.1f} GFLOP per DenseViT-S image')
    report = dict(config=args.config, images=args.images or f'{len(paths)} generated 500x375',
                  step_images_per_s=rate, rate_source=rate_source, variants={})
    print(f'data pipeline of {args.config}, {len(paths)} '
          f'{"images" if args.images else "generated 500x375 JPEGs"}, one core, '
          f'median of {args.rounds} interleaved rounds')
    print(f'GPU step rate: {rate:.0f} images/s ({rate_source})')
    print('| variant | CPU ms / image | images/s per core | cores per GPU | vs full |')
    print('|---|---|---|---|---|')
    for name, value in ms.items():
        row = dict(cpu_ms_per_image=value, images_per_s_per_core=1e3 / value,
                   cores_per_gpu=rate * value / 1e3, vs_full=value / ms['full'])
        report['variants'][name] = row
        print(f'| {name} | {value:.2f} | {row["images_per_s_per_core"]:.0f} | '
              f'{row["cores_per_gpu"]:.0f} | {row["vs_full"]:.2f} |')
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
