"""Can the data path feed a GPU?  CPU time per image of a data loader worker, per data path.

    python tools/benchmark_data.py [--images FOLDER | --num-images 256] [--rounds 3]
        [--batch 32] [--step-images-per-s R] [--device cpu] [--out benchmark_data.json]

Each variant runs as a training run's data loader worker runs it: one worker process
(``DataLoader(num_workers=1)``) draws ``(index, seed)`` from the config's training set, runs
its pipeline and its collate function, and hands the batches to this process.  Its CPU time
(user + system, the operating system's accounting of the exited worker, less that of a worker
that loads nothing) per image is the cost; ``decode`` -- reading the file and decoding it as
``LoadImageFromFile`` does -- is the yardstick.  The pretraining data paths, from the image
folder (``files``) and from its tar shards (``shards``, ``tools/make_shards.py``):

- ``worker augment`` (``configs/pretrain/densevit_s_worker-augment.py``): decode, crop and
  resize, colour jitter, grayscale, blur, flip, per image in the worker;
- ``device photometric`` (``densevit_s_device-photometric.py``): decode, crop and resize,
  flip in the worker; the photometric ops on the device;
- ``device views``, the default (``densevit_s.py``): decode and draw in the worker; every
  per-pixel op on the device.

Images: generated 500x375 photograph-like JPEGs (smooth shading, edges, texture, sensor
noise; quality 90), or those of ``--images``.  Rounds run every variant once, the order
rotating; the figures are medians over rounds.  Reported per variant: CPU ms per image,
images/s per core, the ratio to ``decode`` (target: at most 2.0 for the default), and the
worker cores one GPU needs at a step rate: ``--step-images-per-s`` (e.g. the images/s of
``tools/benchmark_pretrain.py --device cuda``), or else 35% of the H200's 790 TFLOP/s spent on
DenseViT-S's FLOPs per image.  Then the device part of each device variant -- its data
preprocessor on the worker's batches -- is timed on ``--device`` (on a CPU: one thread, for
reference only).
"""
import argparse
import copy
import json
import os
import os.path as osp
import resource
import statistics
import tempfile
import time

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import FUNCTIONS, init_default_scope
from mmpretrain.registry import DATASETS, MODELS
from PIL import Image
from torch.utils.data import DataLoader

import densevit_mm  # noqa: F401
from densevit_mm.benchmark.flops import PEAK_TFLOPS, dense_branch_flops, vit_s_train_flops
from densevit_mm.datasets import IMAGE_EXTENSIONS, write_shards

GPU_SHARE = 0.35  # of the compute limit, the step rate assumed without a measured one
DECODE = 'decode'
TARGET = 2.0  # the default's worker time, at most this many decodes
PATHS = {  # name -> config
    'worker augment': 'configs/pretrain/densevit_s_worker-augment.py',
    'device photometric': 'configs/pretrain/densevit_s_device-photometric.py',
    'device views (default)': 'configs/pretrain/densevit_s.py',
}
DEFAULT = 'device views (default), files'


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


class Decode:
    """The yardstick: each image read and decoded as ``LoadImageFromFile`` does."""

    def __init__(self, paths: list) -> None:
        self.paths = paths
        self.load = Compose([dict(type='LoadImageFromFile')])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, draw) -> int:
        return self.load(dict(img_path=self.paths[draw[0]]))['img'].shape[0]


def training_sets(folder: str, shard_dir: str) -> dict:
    """Per variant ``(data set, collate function, config)``: each data path of ``PATHS``
    from the folder and from its shards, and ``decode``."""
    sets = {}
    for name, path in PATHS.items():
        cfg = Config.fromfile(path)
        loader = cfg.train_dataloader
        collate = FUNCTIONS.get(loader.collate_fn.type)
        files = dict(loader.dataset, data_root=folder, data_prefix='')
        shards = dict(type='UnlabeledImageShards', data_root=shard_dir, skip_unreadable=True,
                      pipeline=copy.deepcopy(loader.dataset.pipeline))
        for source, dataset in (('files', files), ('shards', shards)):
            sets[f'{name}, {source}'] = (DATASETS.build(dataset), collate, cfg)
    paths = [sets[DEFAULT][0].get_data_info(i)['img_path'] for i in range(len(sets[DEFAULT][0]))]
    sets[DECODE] = (Decode(paths), len, None)
    return sets


def worker_cpu_seconds(dataset, collate, draws: list, batch: int) -> float:
    """CPU seconds one data loader worker process spends on ``draws``, as the operating
    system counts the exited process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    loader = DataLoader(dataset, batch_size=batch, sampler=draws, num_workers=1,
                        collate_fn=collate)
    for _ in loader:
        pass
    del loader  # the worker has exited and been waited for: its times are counted
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def cpu_ms_per_image(sets: dict, images: int, rounds: int, batch: int) -> dict:
    """Per variant, the median over rounds of a worker's CPU ms per image, less a worker
    that loads nothing (process start and exit); the variants' order rotates per round."""
    draws = [(i, 1000 + i) for i in range(images)]
    idle = statistics.median(worker_cpu_seconds(Decode([]), len, [], batch)
                             for _ in range(3))
    names, per_round = list(sets), {name: [] for name in sets}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            dataset, collate, _ = sets[name]
            seconds = worker_cpu_seconds(dataset, collate, draws, batch) - idle
            per_round[name].append(1e3 * seconds / images)
    return {name: statistics.median(v) for name, v in per_round.items()}


def device_ms_per_image(sets: dict, images: int, device: str, rounds: int,
                        batch: int) -> dict:
    """Per device variant (files), the median over rounds of the time its data preprocessor
    takes per image (both views) on ``device``, on batches its workers collate."""
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    out = {}
    for name, (dataset, collate, cfg) in sets.items():
        if cfg is None or not name.endswith('files') or name.startswith('worker'):
            continue
        preprocessor = MODELS.build(cfg.data_preprocessor).to(device)
        batches = [collate([dataset[(i, i)] for i in range(s, min(s + batch, images))])
                   for s in range(0, images, batch)]
        preprocessor(batches[0], True)  # warm-up: tables, kernels
        per_round = []
        for _ in range(rounds):
            sync()
            start = time.perf_counter()
            for data in batches:
                preprocessor(data, True)
            sync()
            per_round.append(1e3 * (time.perf_counter() - start) / images)
        out[name.rsplit(',', 1)[0]] = statistics.median(per_round)
    return out


def step_rate(given: float = None) -> tuple:
    """Images/s one GPU trains at and where the number comes from: ``given``, or else
    ``GPU_SHARE`` of the compute limit spent on DenseViT-S's FLOPs per 224 px image."""
    if given:
        return given, 'given'
    flops = vit_s_train_flops(224) + dense_branch_flops(224)
    return (GPU_SHARE * PEAK_TFLOPS * 1e12 / flops,
            f'{GPU_SHARE:.0%} of {PEAK_TFLOPS:.0f} TFLOP/s at {flops / 1e9:.1f} GFLOP per '
            'DenseViT-S image')


def variant_rows(ms: dict, rate: float) -> dict:
    """Per variant, from its CPU ms per image: images/s per core, its ratio to decoding,
    and the worker cores one GPU training at ``rate`` images/s needs."""
    return {name: dict(cpu_ms_per_image=value, images_per_s_per_core=1e3 / value,
                       vs_decode=value / ms[DECODE], cores_per_gpu=rate * value / 1e3)
            for name, value in ms.items()}


def report_lines(rows: dict) -> list:
    """The Markdown table of :func:`variant_rows` and the line on the target."""
    lines = ['| data path | CPU ms / image | images/s per core | vs decode | cores per GPU |',
             '|---|---|---|---|---|']
    for name, row in rows.items():
        lines.append(f'| {name} | {row["cpu_ms_per_image"]:.2f} | '
                     f'{row["images_per_s_per_core"]:.0f} | {row["vs_decode"]:.2f} | '
                     f'{row["cores_per_gpu"]:.1f} |')
    ratio = rows[DEFAULT]['vs_decode']
    lines.append(f'the default data path costs {ratio:.2f} decodes per image (target <= '
                 f'{TARGET:.1f}: {"met" if ratio <= TARGET else "not met"})')
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', help='a folder of JPEGs (default: generated ones)')
    parser.add_argument('--num-images', type=int, default=256)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--step-images-per-s', type=float,
                        help='images/s one GPU trains at (default: 35%% of the H200 limit)')
    parser.add_argument('--device', default='cpu',
                        help='where to time the device part (on a CPU: one thread)')
    parser.add_argument('--out', default='benchmark_data.json')
    args = parser.parse_args()
    torch.set_num_threads(1)  # a worker has one core
    cv2.setNumThreads(1)
    init_default_scope('mmpretrain')
    with tempfile.TemporaryDirectory() as tmp:
        folder = osp.join(tmp, 'images')
        os.makedirs(folder)
        if args.images:
            names = sorted(f for f in os.listdir(args.images)
                           if f.lower().endswith(IMAGE_EXTENSIONS))[:args.num_images]
            if not names:
                raise SystemExit(f'no images in {args.images}')
            for name in names:
                os.symlink(osp.abspath(osp.join(args.images, name)), osp.join(folder, name))
        else:
            names = [osp.basename(p) for p in write_jpegs(folder, args.num_images)]
        write_shards(folder, names, osp.join(tmp, 'shards'))
        sets = training_sets(folder, osp.join(tmp, 'shards'))
        ms = cpu_ms_per_image(sets, len(names), args.rounds, args.batch)
        device = device_ms_per_image(sets, len(names), args.device, args.rounds, args.batch)
    rate, rate_source = step_rate(args.step_images_per_s)
    rows = variant_rows(ms, rate)
    report = dict(images=args.images or f'{len(names)} generated 500x375',
                  step_images_per_s=rate, rate_source=rate_source, variants=rows,
                  target_met=rows[DEFAULT]['vs_decode'] <= TARGET,
                  device_part=dict(device=args.device, ms_per_image=device))
    print(f'data loader worker CPU time, {len(names)} '
          f'{"images" if args.images else "generated 500x375 JPEGs"}, batches of '
          f'{args.batch}, median of {args.rounds} rounds')
    print(f'GPU step rate: {rate:.0f} images/s ({rate_source})')
    print('\n'.join(report_lines(rows)))
    where = f'{args.device}' + (', one thread' if args.device == 'cpu' else '')
    for name, value in device.items():
        print(f'device part of {name} (its data preprocessor, both views) on {where}: '
              f'{value:.2f} ms per image')
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
