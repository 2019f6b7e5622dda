"""Can the data pipeline feed a GPU?  Worker CPU time per image of the pretraining pipeline.

    python tools/benchmark_data.py [--config configs/pretrain/densevit_s.py]
        [--device-config configs/pretrain/densevit_s_device-photometric.py]
        [--images FOLDER | --num-images 200] [--rounds 3] [--step-images-per-s R]
        [--device cpu] [--out benchmark_data.json]

Runs the two-view training pipelines in this process on one core (one torch / OpenCV
thread, as one dataloader worker does) over ImageNet-like JPEGs: by default generated
500x375 photograph-like pictures (smooth shading, edges, texture, sensor noise; quality 90),
or the images of ``--images``.  Three variants, interleaved image by image:

- ``per-image photometric``: ``--config``'s pipeline (decode, two random resized crops,
  colour jitter, grayscale, Gaussian blur, flip, packing), all in the worker;
- ``device photometric: worker part``: ``--device-config``'s pipeline, what its workers do:
  decode, crops, flip, packing, and drawing the photometric parameters
  (``DeferredPhotometric``); ``PhotometricDataPreprocessor`` applies them on the device;
- ``decode``: loading the image alone.

Reports CPU milliseconds per image, images/s per worker core, and the cores one GPU needs at
a step rate: ``--step-images-per-s`` (e.g. the images/s of ``tools/benchmark_pretrain.py
--device cuda``), or else 35% of the H200's 790 TFLOP/s spent on DenseViT-S's FLOPs per image.
Then times the device part -- ``PhotometricDataPreprocessor`` on batches of the worker
part's output -- on ``--device`` (on a CPU: one thread, for reference only).
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
from mmengine.dataset import Compose, default_collate
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from PIL import Image

import densevit_mm  # noqa: F401
from densevit_mm.benchmark.flops import PEAK_TFLOPS, dense_branch_flops, vit_s_train_flops
from densevit_mm.datasets import IMAGE_EXTENSIONS

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


PER_IMAGE, WORKER_PART = 'per-image photometric', 'device photometric: worker part'


def pipelines(cfg: Config, device_cfg: Config) -> dict:
    full = cfg.train_dataloader.dataset.pipeline
    return {PER_IMAGE: Compose(copy.deepcopy(full)),
            WORKER_PART: Compose(copy.deepcopy(device_cfg.train_dataloader.dataset.pipeline)),
            'decode': Compose([t for t in full if t['type'] == 'LoadImageFromFile'])}


def device_part_ms_per_image(device_cfg: Config, pipeline, paths: list, device: str,
                             rounds: int, batch_size: int = 32) -> float:
    """Median over rounds of the time ``PhotometricDataPreprocessor`` takes per image (both
    views) on batches of the worker part's output."""
    preprocessor = MODELS.build(device_cfg.data_preprocessor).to(device)
    batches = [default_collate([pipeline(dict(img_path=p)) for p in paths[i:i + batch_size]])
               for i in range(0, len(paths), batch_size)]
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    preprocessor(batches[0], True)  # warm-up
    per_round = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        for batch in batches:
            preprocessor(batch, True)
        sync()
        per_round.append(1e3 * (time.perf_counter() - start) / len(paths))
    return statistics.median(per_round)


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



def step_rate(given: float = None) -> tuple:
    """Images/s one GPU trains at and where the number comes from: ``given``, or else
    ``GPU_SHARE`` of the compute limit spent on DenseViT-S's FLOPs per 224 px image."""
    if given:
        return given, 'given'
    flops = vit_s_train_flops(224) + dense_branch_flops(224)
    return (GPU_SHARE * PEAK_TFLOPS * 1e12 / flops,
            f'{GPU_SHARE:.0%} of {PEAK_TFLOPS:.0f} TFLOP/s at {flops / 1e9:.1f} GFLOP per '
            'DenseViT-S image')


def variant_rows(ms: dict, rate: float) -> tuple:
    """Per variant, from its CPU ms per image: images/s per core, the worker cores one GPU
    training at ``rate`` images/s needs, and the time relative to the per-image pipeline;
    and whether the worker part meets its target (at most a third of the per-image time)."""
    rows = {name: dict(cpu_ms_per_image=value, images_per_s_per_core=1e3 / value,
                       cores_per_gpu=rate * value / 1e3, vs_per_image=value / ms[PER_IMAGE])
            for name, value in ms.items()}
    return rows, ms[WORKER_PART] / ms[PER_IMAGE] <= 1 / 3


def report_lines(rows: dict) -> list:
    """The Markdown table of :func:`variant_rows` and the line on the worker share."""
    lines = ['| variant | CPU ms / image | images/s per core | cores per GPU | vs per-image |',
             '|---|---|---|---|---|']
    for name, row in rows.items():
        lines.append(f'| {name} | {row["cpu_ms_per_image"]:.2f} | '
                     f'{row["images_per_s_per_core"]:.0f} | {row["cores_per_gpu"]:.0f} | '
                     f'{row["vs_per_image"]:.2f} |')
    share = rows[WORKER_PART]['vs_per_image']
    lines.append(f'worker CPU time with the device option: {share:.2f} of the per-image '
                 f'pipeline\'s (target <= 1/3: {"met" if share <= 1 / 3 else "not met"})')
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default='configs/pretrain/densevit_s.py')
    parser.add_argument('--device-config',
                        default='configs/pretrain/densevit_s_device-photometric.py')
    parser.add_argument('--images', help='a folder of JPEGs (default: generated ones)')
    parser.add_argument('--num-images', type=int, default=200)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--step-images-per-s', type=float,
                        help='images/s one GPU trains at (default: 35%% of the H200 limit)')
    parser.add_argument('--device', default='cpu',
                        help='where to time the device part (on a CPU: one thread)')
    parser.add_argument('--out', default='benchmark_data.json')
    args = parser.parse_args()
    torch.set_num_threads(1)  # one worker, one core
    cv2.setNumThreads(1)
    cfg, device_cfg = Config.fromfile(args.config), Config.fromfile(args.device_config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    fns = pipelines(cfg, device_cfg)
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
        device_ms = device_part_ms_per_image(device_cfg, fns[WORKER_PART], paths, args.device,
                                             args.rounds)
    rate, rate_source = step_rate(args.step_images_per_s)
    variants, met = variant_rows(ms, rate)
    report = dict(config=args.config, device_config=args.device_config,
                  images=args.images or f'{len(paths)} generated 500x375',
                  step_images_per_s=rate, rate_source=rate_source, variants=variants,
                  worker_share_target_met=met,
                  device_part=dict(device=args.device, ms_per_image=device_ms))
    print(f'data pipelines of {args.config} and {args.device_config}, {len(paths)} '
          f'{"images" if args.images else "generated 500x375 JPEGs"}, one core, '
          f'median of {args.rounds} interleaved rounds')
    print(f'GPU step rate: {rate:.0f} images/s ({rate_source})')
    print('\n'.join(report_lines(variants)))
    where = f'{args.device}' + (', one thread' if args.device == 'cpu' else '')
    print(f'device part (PhotometricDataPreprocessor, batches of 32, both views) on {where}: '
          f'{device_ms:.2f} ms per image')
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
