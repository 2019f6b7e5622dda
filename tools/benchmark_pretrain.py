"""Pretraining cost, measured side by side in one run (a benchmark, not a test).

    python tools/benchmark_pretrain.py [--device cpu|cuda] [--loss-shape M K D]
        [--chunk-sizes 512 2048 8192] [--batch 8] [--img-size 224] [--bf16]
        [--skip-loss] [--skip-step] [--skip-data] [--reps 5] [--out benchmark_pretrain.json]

1. InfoNCE against the queue, forward + backward: naive (all M x K logits), chunked
   (``chunked_info_nce``) at each chunk size and fused (``fused_info_nce``, PyTorch's fused
   attention kernel returning its log-sum-exp), at the dense shape (default 12544 x 65536 x 128
   on CUDA: 64 images x 196 patches, queue 65536) and at the global shape (one row per image).
2. One training step (forward, backward, AdamW, EMA, enqueue) of DenseViT-S vs the
   global-only baseline (lambda 0, no dense branch) and mmpretrain's MoCoV3 on ViT-S when it
   builds: time, images/s, peak memory, the ratio to the global-only step, its FLOP floor
   and, on CUDA, the fraction of the 790 TFLOP/s bf16 limit (the model's own FLOPs: the
   dense branch counts for DenseViT-S).  The DenseViT step is also timed
   as training runs it (``train_step`` through ``GuardedOptimWrapper``), and both DenseViT-S
   and global-only steps are broken down into their parts (backbone, neck, correspondence,
   dense loss, global loss, EMA, enqueue, optimizer), each timed alone at the step's shapes;
   what the parts do not add up to is shown as "rest".

Timing: all variants of a section run in one process, interleaved (the order rotates every
repetition), and the median is reported, so that a noisy machine affects them alike.  Peak
memory comes from one more process per variant, so it is that variant's own: CUDA's
``max_memory_allocated``, or on CPU the rise of the process's peak RSS over its inputs.
"""
import argparse
import json
import logging
import multiprocessing as mp
from queue import Empty
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from densevit_mm.benchmark.flops import (PEAK_TFLOPS, QUEUE_LEN, dense_branch_flops,
                                         vit_s_train_flops)


STEP_VARIANTS = {
    'densevit-s (lambda 0.5)': dict(dense=True),
    'global-only (lambda 0)': dict(dense=False),
    'mmpretrain MoCoV3 ViT-S': dict(mocov3=True),
}
DENSE, GLOBAL = 'densevit-s (lambda 0.5)', 'global-only (lambda 0)'
PARTS = ('backbone', 'neck', 'correspondence', 'dense loss', 'global loss', 'EMA', 'enqueue',
         'optimizer')


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def _peak_bytes(device: str) -> int:
    if device == 'cuda':
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _reset_peak(device: str) -> int:
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return _peak_bytes(device)


def _time_once(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleaved_medians(fns: dict, device: str, reps: int) -> dict:
    """Median seconds of each callable, timed in turns; the order rotates every repetition."""
    names, times = list(fns), {name: [] for name in fns}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            times[name].append(_time_once(fns[name], device))
    return {name: statistics.median(t) for name, t in times.items()}


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


# ---- 1. the loss paths -------------------------------------------------------------------

def _loss_paths(args) -> dict:
    chunks = sorted(set(args.chunk_sizes) | {args.step_chunk})  # the fallback is the yardstick
    return {'naive': None, **{f'chunked {c}': c for c in chunks}, 'fused': 'fused'}


def _loss_fn(args, shape, path):
    from densevit_mm.models.losses import chunked_info_nce, fused_info_nce
    from densevit_mm.models.losses import naive_info_nce as info_nce
    torch.manual_seed(0)
    M, K, D = shape
    dev = args.device
    q = F.normalize(torch.randn(M, D, device=dev), dim=1).requires_grad_()
    k = F.normalize(torch.randn(M, D, device=dev), dim=1)
    negatives = F.normalize(torch.randn(K, D, device=dev), dim=1)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=args.bf16):
            if path is None:
                loss = info_nce(q, k, negatives, 0.2)
            elif path == 'fused':
                loss = fused_info_nce(q, k, negatives, 0.2)
            else:
                loss = chunked_info_nce(q, k, negatives, 0.2, path)
        loss.backward()
        q.grad = None
    return step


def _loss_memory_worker(args, shape, path, queue):
    try:
        step = _loss_fn(args, shape, path)
        base = _reset_peak(args.device)
        step()
        queue.put(dict(peak_bytes=_peak_bytes(args.device) - (base if args.device == 'cpu'
                                                               else 0)))
    except Exception as err:  # e.g. no fused kernel for this device and dtype
        queue.put(dict(error=f'{type(err).__name__}: {err}'[:200]))


def _loss_timing_worker(args, shape, queue):
    fns = {}
    for name, path in _loss_paths(args).items():
        if name == 'naive' and args.no_naive:
            continue
        try:
            fns[name] = _loss_fn(args, shape, path)
            fns[name]()  # warm-up
        except Exception:  # reported by the memory worker
            fns.pop(name, None)
    queue.put(interleaved_medians(fns, args.device, args.reps))


def measure_losses(args, shape) -> dict:
    """Seconds and peak memory of every loss path at ``shape``, with ratios to the chunked
    path of the default chunk size (the fallback) and to the naive reference."""
    seconds = _run(_loss_timing_worker, args, shape)
    if 'error' in seconds:
        raise SystemExit(f'loss timing failed: {seconds["error"]}')
    report = {}
    for name, path in _loss_paths(args).items():
        if name == 'naive' and args.no_naive:
            continue
        r = _run(_loss_memory_worker, args, shape, path)
        if 'error' not in r:
            r = (dict(r, seconds=seconds[name]) if name in seconds else
                 dict(error='failed in the timing process only (it ran alone)'))
        report[name] = r
    reference = report.get('naive', {})
    fallback = report.get(f'chunked {args.step_chunk}', {})
    for r in report.values():
        if 'error' in r:
            continue
        if 'seconds' in reference:
            r['time_vs_naive'] = r['seconds'] / reference['seconds']
            r['memory_vs_naive'] = r['peak_bytes'] / max(reference['peak_bytes'], 1)
        if 'seconds' in fallback:
            r['time_vs_chunked'] = r['seconds'] / fallback['seconds']
    return report


def print_losses(title: str, report: dict, args) -> None:
    print(f'\n{title}')
    print(f'| path | peak memory (MB) | time (s) | time vs chunked {args.step_chunk} | '
          'time vs naive | memory vs naive |')
    print('|---|---|---|---|---|---|')
    for name, r in report.items():
        if 'error' in r:
            print(f'| {name} | {r["error"]} | | | | |')
            continue
        print(f'| {name} | {r["peak_bytes"] / 2**20:.0f} | {r["seconds"]:.4f} | '
              f'{r.get("time_vs_chunked", float("nan")):.2f} | '
              f'{r.get("time_vs_naive", float("nan")):.2f} | '
              f'{r.get("memory_vs_naive", float("nan")):.3f} |')


# ---- 2. the training step ----------------------------------------------------------------

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
        loss = dict(implementation=args.step_loss, chunk_size=args.step_chunk)
        model = MODELS.build(dict(
            type='DenseViTSelfSup', momentum=0.001, loss_lambda=0.5 if dense else 0.,
            backbone=dict(type='DenseViT', arch='densevit-s', img_size=args.img_size),
            neck=dict(type='DenseProjectionNeck', in_channels=384,
                      dense_out_channels=128 if dense else None),
            head=dict(type='DenseContrastiveHead',
                      loss_global=dict(type='GlobalContrastiveLoss', **loss),
                      loss_dense=dict(type='DenseContrastiveLoss', **loss) if dense else None)))
    model.init_weights()
    return model


def _step_setup(name, args):
    """Model, optimizer, views and the plain step function of one variant."""
    import densevit_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    from mmengine.logging import MessageHub, MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights() reports
    # mmpretrain's MoCoV3 anneals its momentum by the run length the Runner would record
    MessageHub.get_current_instance().update_info('max_iters', 1000)
    dev = args.device
    model = _build_step_model(STEP_VARIANTS[name], args).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    torch.manual_seed(0)
    views = [torch.randn(args.batch, 3, args.img_size, args.img_size, device=dev)
             for _ in range(2)]

    from densevit_mm.models.losses import MemoryQueue
    queues = [m for m in model.modules() if isinstance(m, MemoryQueue)]

    def step():  # unguarded: the keys go into the queues whatever the step's values
        for queue in queues:
            queue.stage()
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=args.bf16):
            losses = model.loss(views, None)
            loss = sum(v for key, v in losses.items() if key.startswith('loss'))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for queue in queues:
            queue.commit(all_finite=True)
    return model, optimizer, views, step


def _step_memory_worker(name, args, queue):
    try:
        _, _, _, step = _step_setup(name, args)
    except Exception as err:  # mmpretrain's MoCoV3 may not build on this stack
        queue.put(dict(error=f'{type(err).__name__}: {err}'))
        return
    base = _reset_peak(args.device)
    step()
    step()  # AdamW allocates its state on the first step
    queue.put(dict(peak_bytes=_peak_bytes(args.device) - (base if args.device == 'cpu' else 0)))


def step_parts(model, optimizer, views, args) -> dict:
    """One callable per part of a DenseViTSelfSup step, each doing what the step does for
    that part, on inputs prepared here once (outputs of the earlier parts, detached)."""
    amp = dict(device_type=args.device, dtype=torch.bfloat16, enabled=args.bf16)
    head = model.head
    with torch.no_grad(), torch.autocast(**amp):
        q_out = model.backbone(views[0])
        k_out = model.backbone(views[1])
        q_global, q_dense, _ = model.neck(q_out)
        k_global, k_dense, k_pooled = model.neck(k_out)
    key_backbone, key_neck = model.target_encoder.module
    online = nn.Sequential(model.backbone, model.neck)

    def backward_of(outputs):  # a backward pass as the loss's gradient would drive it
        tensors = [t for t in outputs if t is not None and t.requires_grad]
        torch.autograd.backward(tensors, [torch.ones_like(t) for t in tensors])

    def backbone():
        optimizer.zero_grad(set_to_none=True)  # as the step: fresh gradients, not accumulated
        with torch.autocast(**amp):
            out = model.backbone(views[0])
            with torch.no_grad():
                key_backbone(views[1])
        backward_of([t for pair in out for t in pair])

    def neck():
        optimizer.zero_grad(set_to_none=True)
        q_in = [(c.detach().requires_grad_(), p.detach().requires_grad_()) for c, p in q_out]
        with torch.autocast(**amp):
            out = model.neck(q_in)
            with torch.no_grad():
                key_neck(k_out)
        backward_of(out)

    def correspondence():
        model.match_patches(q_out, k_out)

    def loss_of(loss_module, *inputs):
        def run():
            q = inputs[0].detach().requires_grad_()
            loss_module.stage()  # as training does; the write itself is timed by 'enqueue'
            with torch.autocast(**amp):
                loss = loss_module(q, *inputs[1:])
            loss.backward()
            loss_module.discard()  # the queue stays as it was for the next repetition
        return run

    def ema():
        with torch.no_grad():
            model.target_encoder.update_parameters(online)

    def enqueue():
        for loss_module, keys in ((head.loss_global, k_global), (head.loss_dense, k_pooled)):
            if loss_module is not None:
                loss_module.stage()
                loss_module.enqueue(F.normalize(keys.float(), dim=1))
                loss_module.commit(all_finite=True)  # as an applied step

    def optimizer_step():
        for p in model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    match = model.match_patches(q_out, k_out)
    parts = dict(backbone=backbone, neck=neck, EMA=ema, enqueue=enqueue,
                 optimizer=optimizer_step)
    parts['global loss'] = loss_of(head.loss_global, q_global, k_global)
    if head.loss_dense is not None:
        parts['correspondence'] = correspondence
        parts['dense loss'] = loss_of(head.loss_dense, q_dense, k_dense, q_out[-1][1],
                                      k_out[-1][1], k_pooled, match)
    return parts


def _step_timing_worker(names, args, queue):
    """Every buildable variant in this process, steps timed in turns; DenseViT's guarded
    train_step and the parts of the DenseViT and global-only steps in the same rotation."""
    setups, fns, errors = {}, {}, {}
    for name in names:
        try:
            setups[name] = _step_setup(name, args)
        except Exception as err:  # mmpretrain's MoCoV3 may not build on this stack
            errors[name] = f'{type(err).__name__}: {err}'
            continue
        fns[name] = setups[name][3]
    if DENSE in setups:
        from densevit_mm.engine import GuardedAmpOptimWrapper, GuardedOptimWrapper
        model, optimizer, views, _ = setups[DENSE]
        wrapper = (GuardedAmpOptimWrapper(optimizer) if args.bf16 else
                   GuardedOptimWrapper(optimizer))

        def train_step():  # as the Runner starts it: no gradients left by other callables
            optimizer.zero_grad(set_to_none=True)
            model.train_step(dict(inputs=views, data_samples=None), wrapper)
        fns['train_step'] = train_step
    for name in (DENSE, GLOBAL):
        if name in setups:
            for part, fn in step_parts(*setups[name][:3], args).items():
                fns[f'{name} / {part}'] = fn
    for fn in fns.values():  # warm-up; AdamW allocates its state on the first step
        fn()
        fn()
    seconds = interleaved_medians(fns, args.device, args.reps)
    queue.put(dict(seconds=seconds, errors=errors))


def measure_step(args) -> dict:
    timing = _run(_step_timing_worker, list(STEP_VARIANTS), args)
    if 'error' in timing:
        raise SystemExit(f'step timing failed: {timing["error"]}')
    seconds = timing['seconds']
    report = {}
    for name in STEP_VARIANTS:
        if name in timing['errors']:
            report[name] = dict(error=timing['errors'][name])
            continue
        r = _run(_step_memory_worker, name, args)
        r.update(seconds=seconds[name], images_per_s=args.batch / seconds[name])
        report[name] = r
    base = report[GLOBAL]['seconds']
    for r in report.values():
        if 'seconds' in r:
            r['time_ratio'] = r['seconds'] / base
    if DENSE in seconds:
        report[DENSE].update(train_step_seconds=seconds['train_step'],
                             train_step_ratio=seconds['train_step'] / seconds[DENSE])
    report['floor_ratio'] = 1 + dense_branch_flops(args.img_size) / vit_s_train_flops(args.img_size)
    report['parts'] = {name: {part: seconds.get(f'{name} / {part}') for part in PARTS}
                       for name in (DENSE, GLOBAL)}
    for name, parts in report['parts'].items():
        parts['rest'] = seconds[name] - sum(v for v in parts.values() if v is not None)
    # the parts timed alone are steadier than whole steps on a noisy machine: their sums give
    # a second estimate of the ratio
    sums = {name: sum(v for k, v in report['parts'][name].items() if v is not None and
                      k != 'rest') for name in (DENSE, GLOBAL)}
    report['parts_sum_ratio'] = sums[DENSE] / sums[GLOBAL]
    return report


def print_step(report: dict, args) -> None:
    cuda = args.device == 'cuda' and args.bf16  # the compute fraction is of the bf16 limit
    print(f'\ntraining step, ViT-S, {args.batch} images of {args.img_size}px, queues of '
          f'{QUEUE_LEN}, InfoNCE {args.step_loss}, median of {args.reps} interleaved')
    print('| model | time (s) | images/s | peak memory (MB) | time vs global-only |'
          + (' compute fraction |' if cuda else ''))
    print('|---|---|---|---|---|' + ('---|' if cuda else ''))
    for name in STEP_VARIANTS:
        r = report[name]
        if 'error' in r:
            print(f'| {name} | did not run: {r["error"][:80]} | | | |')
            continue
        line = (f'| {name} | {r["seconds"]:.3f} | {r["images_per_s"]:.1f} | '
                f'{r["peak_bytes"] / 2**20:.0f} | {r["time_ratio"]:.3f} |')
        if cuda:
            flops = vit_s_train_flops(args.img_size) + (
                dense_branch_flops(args.img_size) if name == DENSE else 0)
            r['compute_fraction'] = flops * r['images_per_s'] / (PEAK_TFLOPS * 1e12)
            line += f' {r["compute_fraction"]:.3f} |'
        print(line)
    print(f'FLOP floor of the exact method: {report["floor_ratio"]:.3f}x the global-only step '
          f'(dense branch {dense_branch_flops(args.img_size) / 1e9:.1f} GFLOP on ViT-S\'s '
          f'{vit_s_train_flops(args.img_size) / 1e9:.1f} per image)')
    dense = report[DENSE]
    if 'train_step_ratio' in dense:
        print(f'DenseViT-S step through train_step + GuardedOptimWrapper: '
              f'{dense["train_step_seconds"]:.3f} s, {dense["train_step_ratio"]:.3f}x the '
              'plain step')
    print('\nparts of the step, each timed alone (s)')
    print('| part | densevit-s | global-only | difference | share of the difference |')
    print('|---|---|---|---|---|')
    gap = report[DENSE]['seconds'] - report[GLOBAL]['seconds']
    for part in PARTS + ('rest',):
        d, g = report['parts'][DENSE][part], report['parts'][GLOBAL][part] or 0.
        print(f'| {part} | {d:.4f} | {g:.4f} | {d - g:+.4f} | '
              f'{(d - g) / gap if gap else float("nan"):+.0%} |')
    print(f'| whole step | {report[DENSE]["seconds"]:.4f} | {report[GLOBAL]["seconds"]:.4f} | '
          f'{gap:+.4f} | |')
    print(f'sum of the parts, densevit-s vs global-only: {report["parts_sum_ratio"]:.3f}x')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--loss-shape', type=int, nargs=3, metavar=('M', 'K', 'D'),
                        help='dense loss shape (default: 12544 65536 128 on CUDA, '
                        '3136 65536 128 on CPU); the global shape is batch x K x D')
    parser.add_argument('--chunk-sizes', type=int, nargs='+', default=[512, 2048, 8192])
    parser.add_argument('--no-naive', action='store_true',
                        help='leave out the naive loss path (it needs M x K x 12 bytes)')
    parser.add_argument('--step-loss', default='auto',
                        choices=['auto', 'fused', 'chunked', 'naive'],
                        help='InfoNCE implementation of the losses in the step comparison')
    parser.add_argument('--step-chunk', type=int, default=2048,
                        help='chunk size of the chunked path in the step comparison')
    parser.add_argument('--batch', type=int, help='images per step (default 64 CUDA, 8 CPU)')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--bf16', action='store_true', help='bf16 autocast')
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--skip-step', action='store_true', help='leave out the step comparison')
    parser.add_argument('--skip-loss', action='store_true', help='leave out the loss comparison')
    parser.add_argument('--out', default='benchmark_pretrain.json')
    args = parser.parse_args()
    cuda = args.device == 'cuda'
    args.loss_shape = args.loss_shape or ([12544, 65536, 128] if cuda else [3136, 65536, 128])
    args.batch = args.batch or (64 if cuda else 8)
    report = dict(device=torch.cuda.get_device_name() if cuda else 'cpu',
                  threads=torch.get_num_threads(), bf16=args.bf16, loss_shape=args.loss_shape,
                  loss={}, step={})
    precision = ', bf16 autocast' if args.bf16 else ', fp32'
    if not args.skip_loss:
        M, K, D = args.loss_shape
        for term, shape in (('dense', [M, K, D]), ('global', [args.batch, K, D])):
            report['loss'][term] = measure_losses(args, shape)
            print_losses(f'{term} InfoNCE fwd+bwd, M x K x D = {" x ".join(map(str, shape))}, '
                         f'{report["device"]}{precision}, median of {args.reps} interleaved',
                         report['loss'][term], args)
    if not args.skip_step:
        report['step'] = measure_step(args)
        print_step(report['step'], args)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'\nwrote {args.out}')


if __name__ == '__main__':
    main()
