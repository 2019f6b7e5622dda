"""The guarded training step against a plain one, through MMDistributedDataParallel on
several processes (a benchmark, not a test).

    python tools/benchmark_guarded_step.py [--procs 2] [--device cpu|cuda] [--batch 4]
        [--img-size 224] [--reps 15] [--out benchmark_guarded_step.json]

Both steps are ``MMDistributedDataParallel.train_step`` of DenseViT-S (queues of 65536) on
the same model and views, as training takes them with two or more processes:

- plain: mmengine's ``OptimWrapper``; the keys are staged before the forward pass and
  written after the update without any check (what the step costs with no guard at all);
- guarded: ``GuardedOptimWrapper``: staging, the gradient norm, the agreed decision (one
  all-reduce with the SIGTERM flag and the key check, one read to the host), then the
  commit of the keys.

Each process runs ``--reps`` rounds, each round both steps in turns (the order alternates),
timed between barriers; the median of rank 0's times is reported, and the ratio.  On CPU,
each process gets ``cores / procs`` threads (gloo); on CUDA one GPU each (NCCL).
"""
import argparse
import json
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, args, port, out):
    import densevit_mm  # noqa: F401  (registers the models, applies compat)
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.model.wrappers import MMDistributedDataParallel
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from densevit_mm.engine import GuardedOptimWrapper
    from densevit_mm.models.losses import MemoryQueue

    cuda = args.device == 'cuda'
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.procs))
    dist.init_process_group('nccl' if cuda else 'gloo', rank=rank, world_size=args.procs,
                            init_method=f'tcp://127.0.0.1:{port}')
    init_default_scope('mmpretrain')
    MMLogger.get_instance('benchmark', log_level='WARNING')
    device = torch.device(args.device, rank) if cuda else torch.device('cpu')
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/pretrain/densevit_s.py'))
    cfg.model.backbone.img_size = args.img_size
    model = MODELS.build(cfg.model)
    model.init_weights()
    model = model.to(device)
    ddp = MMDistributedDataParallel(module=model, device_ids=[rank] if cuda else None,
                                    broadcast_buffers=False)
    params = [p for p in model.parameters() if p.requires_grad]
    plain = OptimWrapper(torch.optim.AdamW(params, lr=1e-6))
    guarded = GuardedOptimWrapper(torch.optim.AdamW(params, lr=1e-6))
    queues = [m for m in model.modules() if isinstance(m, MemoryQueue)]
    g = torch.Generator().manual_seed(rank)
    data = dict(inputs=[torch.randint(0, 256, (args.batch, 3, args.img_size, args.img_size),
                                      generator=g).float() for _ in range(2)],
                data_samples=None)

    def plain_step():
        for queue in queues:
            queue.stage()
        ddp.train_step(data, plain)
        for queue in queues:
            queue.commit(all_finite=True)

    def guarded_step():
        ddp.train_step(data, guarded)

    steps = dict(plain=plain_step, guarded=guarded_step)
    times = {name: [] for name in steps}
    for rep in range(args.reps + 2):  # two rounds of warm-up (AdamW's state, the kernels)
        order = list(steps) if rep % 2 == 0 else list(steps)[::-1]
        for name in order:
            dist.barrier()
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            steps[name]()
            if cuda:
                torch.cuda.synchronize()
            dist.barrier()
            if rep >= 2:
                times[name].append(time.perf_counter() - start)
    if rank == 0:
        out.update({name: statistics.median(t) for name, t in times.items()})
        out['spread'] = {name: [min(t), max(t)] for name, t in times.items()}
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--procs', type=int, default=2)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--batch', type=int, default=4, help='images per process')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--reps', type=int, default=15)
    parser.add_argument('--out', default='benchmark_guarded_step.json')
    args = parser.parse_args()
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(args, _free_port(), out), nprocs=args.procs)
        result = dict(out)
    ratio = result['guarded'] / result['plain']
    report = dict(procs=args.procs, device=args.device, batch_per_process=args.batch,
                  img_size=args.img_size, reps=args.reps, seconds=dict(
                      plain=result['plain'], guarded=result['guarded']),
                  spread=result['spread'], guarded_vs_plain=ratio)
    print(f'\nMMDistributedDataParallel.train_step of DenseViT-S on {args.procs} {args.device} '
          f'processes, {args.batch} images of {args.img_size}px each, median of {args.reps} '
          'interleaved rounds')
    print('| step | time (s) | min - max (s) |')
    print('|---|---|---|')
    for name in ('plain', 'guarded'):
        low, high = result['spread'][name]
        print(f'| {name} | {result[name]:.4f} | {low:.4f} - {high:.4f} |')
    print(f'guarded / plain: {ratio:.4f}')
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
