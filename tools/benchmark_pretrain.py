"""Pretraining cost, measured side by side in one run (a benchmark, not a test).

    python tools/benchmark_pretrain.py [--device cpu|cuda] [--loss-shape M K D]
        [--chunk-sizes 512 2048 8192] [--batch 8] [--img-size 224] [--bf16]
        [--skip-loss] [--skip-step] [--reps 5] [--out benchmark_pretrain.json]

1. InfoNCE against the queue, forward + backward: naive (all M x K logits), chunked
   (``info_nce(..., 'chunked', size)``) at each chunk size and fused (PyTorch's fused
   attention kernel returning its log-sum-exp), at the dense shape (default 12544 x 65536 x 128
   on CUDA: 64 images x 196 patches, queue 65536) and at the global shape (one row per image).
2. One training step (forward, backward, AdamW, EMA, enqueue) of DenseViT-S vs the
   global-only baseline (lambda 0, no dense branch) and mmpretrain's MoCoV3 on ViT-S when it
   builds: time, images/s, peak memory, the ratio to the global-only step, its FLOP floor
   and, on CUDA, the fraction of the 790 TFLOP/s bf16 limit (the model's own FLOPs: the
   dense branch counts for DenseViT-S).  The DenseViT step is also timed as training runs it
   (``train_step`` through ``GuardedOptimWrapper``), and the DenseViT-S and global-only steps
   are broken down into their parts by ``torch.profiler`` over real steps: the
   ``record_function`` ranges of ``DenseViTSelfSup.loss`` (backbone, neck, EMA, key encoder,
   correspondence), the two loss modules, and here backward, optimizer and enqueue (the
   queue commit); what the ranges do not cover is shown as "rest".

Timing: ``torch.utils.benchmark.Timer`` (it synchronises CUDA and warms up), each variant
``blocked_autorange`` for about ``--reps`` runs, the median reported and ``Compare``'s table
printed.  Peak memory comes from one more process per variant, so it is that variant's own:
CUDA's ``max_memory_allocated``, or on CPU the rise of the process's peak RSS over its inputs.
"""
import argparse
import json
import logging
import multiprocessing as mp
from queue import Empty
import resource

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.benchmark import Compare, Timer

from densevit_mm.benchmark.flops import (PEAK_TFLOPS, QUEUE_LEN, dense_branch_flops,
                                         vit_s_train_flops)


STEP_VARIANTS = {
    'densevit-s (lambda 0.5)': dict(dense=True),
    'global-only (lambda 0)': dict(dense=False),
    'mmpretrain MoCoV3 ViT-S': dict(mocov3=True),
}
DENSE, GLOBAL = 'densevit-s (lambda 0.5)', 'global-only (lambda 0)'
# the profiler ranges of one step, in step order (the first five are DenseViTSelfSup.loss's)
PARTS = ('backbone', 'neck', 'EMA', 'key encoder', 'correspondence', 'global loss',
         'dense loss', 'backward', 'optimizer', 'enqueue')


def _peak_bytes(device: str) -> int:
    if device == 'cuda':
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _reset_peak(device: str) -> int:
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return _peak_bytes(device)


def median_seconds(fn, reps: int, label: str, sub_label: str, description: str):
    """``Timer`` measurement of ``fn()`` over about ``reps`` runs (after one warm-up run that
    also sets the block length), with all of torch's threads."""
    timer = Timer('fn()', globals=dict(fn=fn), label=label, sub_label=sub_label,
                  description=description, num_threads=torch.get_num_threads())
    first = timer.timeit(1).median
    return timer.blocked_autorange(min_run_time=max(reps - 1, 0) * first)


def timer_medians(fns: dict, device: str, reps: int) -> dict:
    """Median seconds of each callable by :func:`median_seconds` (``Timer`` synchronises
    ``device`` itself)."""
    return {name: median_seconds(fn, reps, 'timer_medians', name, device).median
            for name, fn in fns.items()}




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
    paths = {'naive': None, **{f'chunked {c}': c for c in chunks}, 'fused': 'fused'}
    if args.no_naive:
        del paths['naive']
    return paths


def _loss_fn(args, shape, path):
    from densevit_mm.models.losses import info_nce
    torch.manual_seed(0)
    M, K, D = shape
    dev = args.device
    q = F.normalize(torch.randn(M, D, device=dev), dim=1).requires_grad_()
    k = F.normalize(torch.randn(M, D, device=dev), dim=1)
    negatives = F.normalize(torch.randn(K, D, device=dev), dim=1)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=args.bf16):
            if path is None:
                loss = info_nce(q, k, negatives, 0.2, 'naive')
            elif path == 'fused':
                loss = info_nce(q, k, negatives, 0.2, 'fused')
            else:
                loss = info_nce(q, k, negatives, 0.2, 'chunked', path)
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


def loss_report(seconds: dict, peaks: dict, step_chunk: int) -> dict:
    """Per path: seconds and peak memory (or the error of a path that failed), with ratios
    to the chunked path of the step's chunk size (the fallback) and to the naive reference.

    Args:
        seconds (dict): path -> median seconds, for the paths that ran.
        peaks (dict): path -> ``dict(peak_bytes=...)`` or ``dict(error=...)``, every path.
    """
    report = {}
    for name, r in peaks.items():
        if 'error' not in r:
            r = (dict(r, seconds=seconds[name]) if name in seconds else
                 dict(error='failed in the timing process only (it ran alone)'))
        report[name] = r
    reference = report.get('naive', {})
    fallback = report.get(f'chunked {step_chunk}', {})
    for r in report.values():
        if 'error' in r:
            continue
        if 'seconds' in reference:
            r['time_vs_naive'] = r['seconds'] / reference['seconds']
            r['memory_vs_naive'] = r['peak_bytes'] / max(reference['peak_bytes'], 1)
        if 'seconds' in fallback:
            r['time_vs_chunked'] = r['seconds'] / fallback['seconds']
    return report


def measure_losses(args, shape, title: str):
    """The loss report at ``shape`` and the ``Timer`` measurements it came from."""
    seconds, measurements = {}, []
    for name, path in _loss_paths(args).items():
        try:
            fn = _loss_fn(args, shape, path)
            measurements.append(median_seconds(fn, args.reps, title, name, 'fwd+bwd'))
        except Exception:  # reported by the memory worker, which runs it alone
            continue
        seconds[name] = measurements[-1].median
    peaks = {name: _run(_loss_memory_worker, args, shape, path)
             for name, path in _loss_paths(args).items()}
    return loss_report(seconds, peaks, args.step_chunk), measurements


def loss_lines(title: str, report: dict, step_chunk: int) -> list:
    nan = float('nan')
    lines = [title, f'| path | peak memory (MB) | time (s) | time vs chunked {step_chunk} | '
             'time vs naive | memory vs naive |', '|---|---|---|---|---|---|']
    for name, r in report.items():
        if 'error' in r:
            lines.append(f'| {name} | {r["error"]} | | | | |')
            continue
        lines.append(f'| {name} | {r["peak_bytes"] / 2**20:.0f} | {r["seconds"]:.4f} | '
                     f'{r.get("time_vs_chunked", nan):.2f} | {r.get("time_vs_naive", nan):.2f} | '
                     f'{r.get("memory_vs_naive", nan):.3f} |')
    return lines


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
        with record_function('backward'):
            loss.backward()
        with record_function('optimizer'):
            optimizer.step()
        with record_function('enqueue'):
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


def _loss_ranges(model) -> None:
    """Profiler ranges around the head's two loss modules (their forward, in place)."""
    for name, module in (('global loss', model.head.loss_global),
                         ('dense loss', model.head.loss_dense)):
        if module is None:
            continue
        ranges = []
        module.register_forward_pre_hook(
            lambda mod, inputs, name=name, ranges=ranges:
            ranges.append(record_function(name).__enter__()))
        module.register_forward_hook(
            lambda mod, inputs, output, ranges=ranges: ranges.pop().__exit__(None, None, None))


def range_seconds(events, names, steps: int, device: str) -> dict:
    """Seconds per step spent in each profiler range of ``names`` (None where it never ran):
    the ranges' total time over ``events``, on CUDA their kernels' time."""
    out = dict.fromkeys(names)
    for e in events:
        if e.key in out:
            us = e.device_time_total if device == 'cuda' else e.cpu_time_total
            out[e.key] = (out[e.key] or 0.) + us / 1e6 / steps
    return out


def profile_parts(step, device: str, steps: int = 2) -> dict:
    """Seconds per step of every part of ``step`` (a DenseViTSelfSup step with its ranges),
    from the profiler over ``steps`` real steps; 'step' is the whole."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == 'cuda' else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            with record_function('step'):
                step()
            if device == 'cuda':
                torch.cuda.synchronize()
    if device == 'cuda':  # the host-side ranges, which own their kernels (key_averages would
        # add the device-side copy of each range to it)
        events = [e for e in prof.events() if e.device_type == DeviceType.CPU]
    else:
        events = prof.key_averages()
    return range_seconds(events, PARTS + ('step',), steps, device)


def step_report(seconds: dict, peaks: dict, parts: dict, batch: int, img_size: int) -> dict:
    """The step comparison from measured numbers.

    Args:
        seconds (dict): variant (and 'train_step') -> median seconds of a step.
        peaks (dict): variant -> ``dict(peak_bytes=...)`` or ``dict(error=...)``.
        parts (dict): DENSE and GLOBAL -> :func:`profile_parts`'s seconds per range, with
            'step' the profiled step.
    """
    report = {}
    for name in STEP_VARIANTS:
        r = dict(peaks[name])
        if 'error' not in r:
            r.update(seconds=seconds[name], images_per_s=batch / seconds[name])
        report[name] = r
    base = report[GLOBAL]['seconds']
    for r in report.values():
        if 'seconds' in r:
            r['time_ratio'] = r['seconds'] / base
    if 'train_step' in seconds:
        report[DENSE].update(train_step_seconds=seconds['train_step'],
                             train_step_ratio=seconds['train_step'] / seconds[DENSE])
    report['floor_ratio'] = 1 + dense_branch_flops(img_size) / vit_s_train_flops(img_size)
    report['parts'], sums = {}, {}
    for name in (DENSE, GLOBAL):
        ranges = {part: parts[name][part] for part in PARTS}
        sums[name] = sum(v for v in ranges.values() if v is not None)
        report['parts'][name] = dict(ranges, rest=parts[name]['step'] - sums[name])
    report['parts_sum_ratio'] = sums[DENSE] / sums[GLOBAL]
    return report


def step_lines(report: dict, batch: int, img_size: int, step_loss: str,
               compute_fraction: bool) -> list:
    """The step tables; with ``compute_fraction`` (CUDA bf16) the share of the bf16 limit,
    which it also writes into the report."""
    dense_flops, vit_flops = dense_branch_flops(img_size), vit_s_train_flops(img_size)
    lines = [f'training step, ViT-S, {batch} images of {img_size}px, queues of {QUEUE_LEN}, '
             f'InfoNCE {step_loss}, median of torch.utils.benchmark.Timer',
             '| model | time (s) | images/s | peak memory (MB) | time vs global-only |'
             + (' compute fraction |' if compute_fraction else ''),
             '|---|---|---|---|---|' + ('---|' if compute_fraction else '')]
    for name in STEP_VARIANTS:
        r = report[name]
        if 'error' in r:
            lines.append(f'| {name} | did not run: {r["error"][:80]} | | | |')
            continue
        line = (f'| {name} | {r["seconds"]:.3f} | {r["images_per_s"]:.1f} | '
                f'{r["peak_bytes"] / 2**20:.0f} | {r["time_ratio"]:.3f} |')
        if compute_fraction:
            flops = vit_flops + (dense_flops if name == DENSE else 0)
            r['compute_fraction'] = flops * r['images_per_s'] / (PEAK_TFLOPS * 1e12)
            line += f' {r["compute_fraction"]:.3f} |'
        lines.append(line)
    lines.append(f'FLOP floor of the exact method: {report["floor_ratio"]:.3f}x the global-only '
                 f'step (dense branch {dense_flops / 1e9:.1f} GFLOP on ViT-S\'s '
                 f'{vit_flops / 1e9:.1f} per image)')
    dense = report[DENSE]
    if 'train_step_ratio' in dense:
        lines.append(f'DenseViT-S step through train_step + GuardedOptimWrapper: '
                     f'{dense["train_step_seconds"]:.3f} s, {dense["train_step_ratio"]:.3f}x '
                     'the plain step')
    d_parts, g_parts = report['parts'][DENSE], report['parts'][GLOBAL]
    d_step, g_step = (sum(v for v in p.values() if v is not None) for p in (d_parts, g_parts))
    gap = d_step - g_step
    lines += ['', 'parts of the step, torch.profiler ranges over real steps (s per step)',
              '| part | densevit-s | global-only | difference | share of the difference |',
              '|---|---|---|---|---|']
    for part in PARTS + ('rest',):
        d, g = d_parts[part] or 0., g_parts[part] or 0.
        lines.append(f'| {part} | {d:.4f} | {g:.4f} | {d - g:+.4f} | '
                     f'{(d - g) / gap if gap else float("nan"):+.0%} |')
    lines.append(f'| profiled step | {d_step:.4f} | {g_step:.4f} | {gap:+.4f} | |')
    lines.append(f'sum of the parts, densevit-s vs global-only: '
                 f'{report["parts_sum_ratio"]:.3f}x')
    return lines


def measure_step(args):
    """The step report and the ``Timer`` measurements it came from."""
    setups, errors, measurements, seconds = {}, {}, [], {}
    label = f'training step, {args.batch} images of {args.img_size}px'
    for name in STEP_VARIANTS:
        try:
            setups[name] = _step_setup(name, args)
        except Exception as err:  # mmpretrain's MoCoV3 may not build on this stack
            errors[name] = dict(error=f'{type(err).__name__}: {err}')
            continue
        step = setups[name][3]
        step()  # AdamW allocates its state on the first step
        measurements.append(median_seconds(step, args.reps, label, name, 'step'))
        seconds[name] = measurements[-1].median
    if DENSE in setups:
        from densevit_mm.engine import GuardedAmpOptimWrapper, GuardedOptimWrapper
        model, optimizer, views, _ = setups[DENSE]
        wrapper = (GuardedAmpOptimWrapper(optimizer) if args.bf16 else
                   GuardedOptimWrapper(optimizer))

        def train_step():  # as the Runner starts it: no gradients left by other callables
            optimizer.zero_grad(set_to_none=True)
            model.train_step(dict(inputs=views, data_samples=None), wrapper)
        measurements.append(median_seconds(train_step, args.reps, label, DENSE, 'train_step'))
        seconds['train_step'] = measurements[-1].median
    parts = {}
    for name in (DENSE, GLOBAL):
        _loss_ranges(setups[name][0])
        parts[name] = profile_parts(setups[name][3], args.device)
    peaks = {name: errors.get(name) or _run(_step_memory_worker, name, args)
             for name in STEP_VARIANTS}
    return step_report(seconds, peaks, parts, args.batch, args.img_size), measurements


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
    parser.add_argument('--reps', type=int, default=5,
                        help='timed runs per variant, about (Timer.blocked_autorange)')
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
        measurements = []
        for term, shape in (('dense', [M, K, D]), ('global', [args.batch, K, D])):
            title = (f'{term} InfoNCE fwd+bwd, M x K x D = {" x ".join(map(str, shape))}, '
                     f'{report["device"]}{precision}')
            report['loss'][term], timed = measure_losses(args, shape, title)
            measurements += timed
            print('\n' + '\n'.join(loss_lines(title, report['loss'][term], args.step_chunk)))
        Compare(measurements).print()
    if not args.skip_step:
        report['step'], measurements = measure_step(args)
        Compare(measurements).print()
        print('\n'.join(step_lines(report['step'], args.batch, args.img_size, args.step_loss,
                                   compute_fraction=cuda and args.bf16)))
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'\nwrote {args.out}')


if __name__ == '__main__':
    main()
