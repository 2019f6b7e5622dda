"""Routes to the log-sum-exp and softmax-weighted queue of the fused InfoNCE, side by side
(a benchmark, not a test).

    python tools/benchmark_lse_routes.py [--device cpu|cuda] [--shape M K D] [--bf16]
        [--reps 5] [--out benchmark_lse_routes.json]

The fused InfoNCE needs, per query row, ``lse_i = LSE_j(q_i . n_j / t)`` and
``out_i = sum_j softmax_j(q_i . n_j / t) n_j`` over the queue ``n``: attention with the
queue as keys and values, plus its log-sum-exp.  ``scaled_dot_product_attention`` does not
return the log-sum-exp, so ``fused_lse`` (``densevit_mm/models/losses/lse_routes.py``) calls
the private ``aten`` operator behind it.  PyTorch's public route is FlexAttention
(``flex_attention(..., return_aux=AuxRequest(lse=True))``): eager (which materialises the
``M x K`` scores) and compiled (``torch.compile``, a generated fused kernel).  Each route is
checked against the private operator, then timed (median of interleaved repetitions, after
warm-up and, for the compiled route, its compilation, which is reported apart) and its peak
memory taken in a process of its own (on CPU the rise of the peak RSS over the inputs in the
first call, compilation included; on CUDA a second call's).  Default shape: the dense term of
16 images of 14 x 14 patches on CPU (3136 x 65536 x 128), of 64 images on CUDA
(12544 x 65536 x 128).
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

from benchmark_pretrain import _peak_bytes, _reset_peak, _run, timer_medians

ROUTES = ('private operator', 'flex eager', 'flex compiled')
SCALE = 5.  # 1 / t at DenseCL's t = 0.2


def _inputs(args):
    M, K, D = args.shape
    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    q = F.normalize(torch.randn(M, D, generator=g), dim=1).to(args.device, dtype)
    keys = F.normalize(torch.randn(K, D, generator=g), dim=1).to(args.device, dtype)
    return q, keys


def _route(name, args):
    """A callable returning ``(out (M, D), lse (M,))`` for ``name``, and its inputs."""
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    from densevit_mm.models.losses.lse_routes import attention_with_lse, fused_kernel
    q, keys = _inputs(args)
    if name == 'private operator':
        kernel = fused_kernel(args.device, q.dtype, q.shape[1])
        return lambda: attention_with_lse(q, keys, SCALE, kernel)
    flex = torch.compile(flex_attention, dynamic=False) if name == 'flex compiled' else \
        flex_attention
    q4, k4 = q[None, None], keys[None, None]  # (1, 1, M, D), (1, 1, K, D)

    def run():
        out, aux = flex(q4, k4, k4, scale=SCALE, return_aux=AuxRequest(lse=True))
        return out[0, 0], aux.lse[0, 0].float()
    return run


def _memory_worker(name, args, queue):
    try:
        fn = _route(name, args)
        if args.device == 'cuda':
            fn()  # compiles where it does; CUDA's peak can be reset after it
        base = _reset_peak(args.device)  # a process's peak RSS cannot: the first call counts
        fn()
        queue.put(dict(peak_bytes=_peak_bytes(args.device) - (base if args.device == 'cpu'
                                                               else 0)))
    except Exception as err:  # noqa: BLE001  (a route this build lacks is a result)
        queue.put(dict(error=f'{type(err).__name__}: {err}'.split('\n')[0][:200]))


def _timing_worker(args, queue):
    fns, first_call, errors, max_error = {}, {}, {}, {}
    reference = None
    for name in ROUTES:
        try:
            fn = _route(name, args)
            start = time.perf_counter()
            out, lse = fn()  # the compiled route compiles here
            first_call[name] = time.perf_counter() - start
        except Exception as err:  # noqa: BLE001
            errors[name] = f'{type(err).__name__}: {err}'.split('\n')[0][:200]
            continue
        if reference is None:
            reference = (out.float(), lse.float())
        max_error[name] = max(float((out.float() - reference[0]).abs().max()),
                              float((lse.float() - reference[1]).abs().max()))
        fns[name] = fn
    seconds = timer_medians(fns, args.device, args.reps)
    queue.put(dict(seconds=seconds, first_call=first_call, errors=errors, max_error=max_error))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--shape', type=int, nargs=3, metavar=('M', 'K', 'D'))
    parser.add_argument('--bf16', action='store_true', help='inputs in bfloat16')
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--out', default='benchmark_lse_routes.json')
    args = parser.parse_args()
    args.shape = args.shape or ([12544, 65536, 128] if args.device == 'cuda' else
                                [3136, 65536, 128])
    timing = _run(_timing_worker, args)
    if 'seconds' not in timing:
        raise SystemExit(f'timing failed: {timing.get("error")}')
    report = dict(device=torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu',
                  threads=torch.get_num_threads(), shape=args.shape, bf16=args.bf16, routes={})
    base = timing['seconds'].get('private operator')
    for name in ROUTES:
        r = dict(error=timing['errors'][name]) if name in timing['errors'] else \
            _run(_memory_worker, name, args)
        if 'error' not in r:
            seconds = timing['seconds'][name]
            r.update(seconds=seconds, first_call_seconds=timing['first_call'][name],
                     max_abs_difference=timing['max_error'][name],
                     time_vs_private=seconds / base if base else None)
        report['routes'][name] = r
    print(f'\nlog-sum-exp and softmax-weighted queue, M x K x D = '
          f'{" x ".join(map(str, args.shape))}, {report["device"]}, '
          f'{"bf16" if args.bf16 else "fp32"}, forward, median of {args.reps} interleaved')
    print('| route | time (s) | time vs private | peak memory (MB) | first call (s) | '
          'max abs difference |')
    print('|---|---|---|---|---|---|')
    for name, r in report['routes'].items():
        if 'error' in r:
            print(f'| {name} | {r["error"]} | | | | |')
            continue
        ratio = r['time_vs_private']
        print(f'| {name} | {r["seconds"]:.4f} | {ratio if ratio else float("nan"):.2f} | '
              f'{r["peak_bytes"] / 2**20:.0f} | {r["first_call_seconds"]:.2f} | '
              f'{r["max_abs_difference"]:.2e} |')
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'\nwrote {args.out}')


if __name__ == '__main__':
    main()
