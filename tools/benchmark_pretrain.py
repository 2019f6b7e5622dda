"""Pretraining cost, measured side by side in one run (a benchmark, not a test).

    python tools/benchmark_pretrain.py [--device cpu|cuda] [--loss-shape M K D]
        [--chunk-sizes 1024 4096 16384] [--batch 8] [--img-size 224] [--bf16]
        [--skip-loss | --skip-step] [--reps 3] [--out benchmark_pretrain.json]

1. Dense InfoNCE, forward + backward, naive (all M x K logits) vs memory-lean (chunked
   log-sum-exp, ``chunked_info_nce``) at each chunk size: time and peak memory, as ratios.
   The real shape is 12544 x 65536 x 128 (64 images x 196 patches, queue 65536).
2. One DenseViT-S training step (forward, backward, AdamW, EMA, enqueue) vs the global-only
   baseline (lambda 0, no dense branch) and mmpretrain's MoCoV3 on ViT-S when it builds: time,
   peak memory, images/s, and on CUDA the fraction of the 790 TFLOP/s bf16 limit.  The
   DenseViT step is also timed as training runs it, ``train_step`` through
   ``GuardedOptimWrapper`` (the non-finite check with its gradient norm, staged queue
   writes), interleaved with the plain step in the same process: the ratio is its cost.

Every measurement runs in its own process, so peak memory is that variant's own: CUDA's
``max_memory_allocated``, or on CPU the rise of the process's peak RSS over its inputs.
"""
import argparse
import json
import multiprocessing as mp
from queue import Empty
import resource
import statistics
import time

import torch
import torch.nn.functional as F

PEAK_TFLOPS = 790.  # dense bf16 limit used for the compute fraction on the device

STEP_VARIANTS = {
    'densevit-s (lambda 0.5)': dict(dense=True),
    'global-only (lambda 0)': dict(dense=False),
    'mmpretrain MoCoV3 ViT-S': dict(mocov3=True),
}


def _peak_bytes(device: str) -> int:
    if device == 'cuda':
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _reset_peak(device: str) -> int:
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return _peak_bytes(device)


def _timed(fn, device: str, reps: int) -> float:
    times = []
    for _ in range(reps):
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _loss_worker(args, chunk, queue):
    from densevit_mm.models.losses import chunked_info_nce, info_nce
    torch.manual_seed(0)
    M, K, D = args.loss_shape
    dev = args.device
    q = F.normalize(torch.randn(M, D, device=dev), dim=1).requires_grad_()
    k = F.normalize(torch.randn(M, D, device=dev), dim=1)
    negatives = F.normalize(torch.randn(K, D, device=dev), dim=1)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=args.bf16):
            loss = (info_nce(q, k, negatives, 0.2) if chunk is None else
                    chunked_info_nce(q, k, negatives, 0.2, chunk))
        loss.backward()
        q.grad = None

    base = _reset_peak(dev)
    step()  # the first call sets the high-water mark
    peak = _peak_bytes(dev) - (base if dev == 'cpu' else 0)
    queue.put(dict(peak_bytes=peak, seconds=_timed(step, dev, args.reps)))


def _build_step_model(variant: dict, args):
    from mmpretrain.registry import MODELS
    if variant.get('mocov3'):
        model = MODELS.build(dict(
            type='MoCoV3', base_momentum=0.01,
            backbone=dict(type='MoCoV3ViT', arch='mocov3-small', img_size=args.img_size,
                          patch_size=16),
            neck=dict(type='NonLinearNeck', in_channels=384, hid_channels=4096,
                      out_channels=256, num_layers=3, with_bias=False, with_last_bn=True,
                      with_last_bn_affine=False, with_last_bias=False, with_avg_pool=False),
            head=dict(type='MoCoV3Head', loss=dict(type='CrossEntropyLoss', loss_weight=0.4),
                      temperature=0.2,
                      predictor=dict(type='NonLinearNeck', in_channels=256, hid_channels=4096,
                                     out_channels=256, num_layers=2, with_bias=False,
                                     with_last_bn=True, with_last_bn_affine=False,
                                     with_last_bias=False, with_avg_pool=False))))
    else:
        dense = variant['dense']
        model = MODELS.build(dict(
            type='DenseViTSelfSup', momentum=0.01, loss_lambda=0.5 if dense else 0.,
            backbone=dict(type='DenseViT', arch='densevit-s', img_size=args.img_size),
            neck=dict(type='DenseProjectionNeck', in_channels=384,
                      dense_out_channels=128 if dense else None),
            head=dict(type='DenseContrastiveHead',
                      loss_global=dict(type='GlobalContrastiveLoss'),
                      loss_dense=dict(type='DenseContrastiveLoss',
                                      chunk_size=args.step_chunk) if dense else None)))
    model.init_weights()
    return model


def _step_worker(name, args, queue):
    import densevit_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    from mmengine.logging import MessageHub
    # mmpretrain's MoCoV3 anneals its momentum by the run length the Runner would record
    MessageHub.get_current_instance().update_info('max_iters', 1000)
    dev = args.device
    try:
        model = _build_step_model(STEP_VARIANTS[name], args).to(dev)
    except Exception as err:  # mmpretrain's MoCoV3 may not build on this stack
        queue.put(dict(error=f'{type(err).__name__}: {err}'))
        return
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    torch.manual_seed(0)
    views = [torch.randn(args.batch, 3, args.img_size, args.img_size, device=dev)
             for _ in range(2)]

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=args.bf16):
            losses = model.loss(views, None)
            loss = sum(v for key, v in losses.items() if key.startswith('loss'))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    base = _reset_peak(dev)
    step()
    step()  # AdamW allocates its state on the first step
    peak = _peak_bytes(dev) - (base if dev == 'cpu' else 0)
    seconds = _timed(step, dev, args.reps)
    result = dict(peak_bytes=peak, seconds=seconds, images_per_s=args.batch / seconds)
    if STEP_VARIANTS[name].get('dense'):
        from densevit_mm.engine import GuardedAmpOptimWrapper, GuardedOptimWrapper
        wrapper = (GuardedAmpOptimWrapper(optimizer) if args.bf16 else
                   GuardedOptimWrapper(optimizer))

        def train_step():  # the step as the Runner takes it
            model.train_step(dict(inputs=views, data_samples=None), wrapper)

        train_step()
        plain, guarded = [], []
        for rep in range(args.reps):  # interleaved, alternating which goes first
            pair = ((step, plain), (train_step, guarded))
            for fn, times in (pair if rep % 2 == 0 else pair[::-1]):
                times.append(_timed(fn, dev, 1))
        result.update(train_step_seconds=statistics.median(guarded),
                      train_step_ratio=statistics.median(guarded) / statistics.median(plain))
    queue.put(result)


def _run(target, *args):
    """Run one measurement in a fresh process and return what it reports."""
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not proc.is_alive():  # died without reporting (crash, out of memory)
                result = dict(error=f'the measuring process died (exit code {proc.exitcode})')
                break
    proc.join()
    return result


def vit_s_train_flops(img_size: int) -> float:
    """FLOPs of one DenseViT step per image: 3 passes for the query view (forward + backward)
    and 1 for the key view; 2 FLOPs per multiply-add in every linear and attention matmul."""
    n, c, depth = (img_size // 16) ** 2 + 1, 384, 12
    per_layer = 2 * n * (12 * c * c) + 2 * 2 * n * n * c  # qkv, proj, mlp; QK^T and AV
    return 4 * depth * per_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--loss-shape', type=int, nargs=3, metavar=('M', 'K', 'D'),
                        help='dense loss shape (default: 12544 65536 128 on CUDA, '
                        '3136 65536 128 on CPU)')
    parser.add_argument('--chunk-sizes', type=int, nargs='+', default=[512, 2048, 8192])
    parser.add_argument('--step-chunk', type=int, default=2048,
                        help='chunk size of the dense loss in the training-step comparison')
    parser.add_argument('--batch', type=int, help='images per step (default 64 CUDA, 8 CPU)')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--bf16', action='store_true', help='bf16 autocast')
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--skip-step', action='store_true', help='only the loss comparison')
    parser.add_argument('--skip-loss', action='store_true', help='only the step comparison')
    parser.add_argument('--out', default='benchmark_pretrain.json')
    args = parser.parse_args()
    cuda = args.device == 'cuda'
    args.loss_shape = args.loss_shape or ([12544, 65536, 128] if cuda else [3136, 65536, 128])
    args.batch = args.batch or (64 if cuda else 8)
    report = dict(device=torch.cuda.get_device_name() if cuda else 'cpu',
                  threads=torch.get_num_threads(), bf16=args.bf16, loss_shape=args.loss_shape,
                  loss={}, step={})

    if not args.skip_loss:
        naive = _run(_loss_worker, args, None)
        if 'error' in naive:
            raise SystemExit(f'naive loss measurement failed: {naive["error"]}')
        report['loss']['naive'] = naive
        print(f'dense InfoNCE fwd+bwd, M x K x D = {" x ".join(map(str, args.loss_shape))}, '
              f'{report["device"]}{", bf16" if args.bf16 else ""}')
        print(f'| path | peak memory (MB) | time (s) | memory vs naive | time vs naive |')
        print('|---|---|---|---|---|')
        print(f'| naive | {naive["peak_bytes"] / 2**20:.0f} | {naive["seconds"]:.3f} | 1 | 1 |')
        for chunk in args.chunk_sizes:
            lean = _run(_loss_worker, args, chunk)
            if 'error' in lean:
                print(f'| chunked {chunk} | {lean["error"]} | | | |')
                continue
            lean.update(memory_ratio=lean['peak_bytes'] / naive['peak_bytes'],
                        time_ratio=lean['seconds'] / naive['seconds'])
            report['loss'][f'chunk_{chunk}'] = lean
            print(f'| chunked {chunk} | {lean["peak_bytes"] / 2**20:.0f} | {lean["seconds"]:.3f} | '
                  f'{lean["memory_ratio"]:.3f} | {lean["time_ratio"]:.2f} |')

    if not args.skip_step:
        print(f'\ntraining step, ViT-S, {args.batch} images of {args.img_size}px')
        print('| model | time (s) | images/s | peak memory (MB) | time vs global-only |'
              + (' compute fraction |' if cuda else ''))
        print('|---|---|---|---|---|' + ('---|' if cuda else ''))
        for name in STEP_VARIANTS:
            report['step'][name] = _run(_step_worker, name, args)
        base = report['step']['global-only (lambda 0)']
        for name, r in report['step'].items():
            if 'error' in r:
                print(f'| {name} | did not run: {r["error"][:80]} | | | |')
                continue
            r['time_ratio'] = r['seconds'] / base['seconds']
            line = (f'| {name} | {r["seconds"]:.3f} | {r["images_per_s"]:.1f} | '
                    f'{r["peak_bytes"] / 2**20:.0f} | {r["time_ratio"]:.3f} |')
            if cuda:
                r['compute_fraction'] = (vit_s_train_flops(args.img_size) * r['images_per_s']
                                         / (PEAK_TFLOPS * 1e12))
                line += f' {r["compute_fraction"]:.3f} |'
            print(line)
        dense = report['step']['densevit-s (lambda 0.5)']
        if 'train_step_ratio' in dense:
            print(f'DenseViT-S step through train_step + GuardedOptimWrapper: '
                  f'{dense["train_step_seconds"]:.3f} s, {dense["train_step_ratio"]:.3f}x the '
                  f'plain step (interleaved, median of {args.reps})')
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'\nwrote {args.out}')


if __name__ == '__main__':
    main()
