"""GPU acceptance check of the pretraining path: what only a GPU can show, in one run.

    python tools/gpu_check.py [--out work_dirs/gpu_check] [--iters 300] [--batch 64]
    python tools/gpu_check.py --device cpu --quick   # the same steps at toy sizes, on CPU

Installs nothing: run it with the project's environment (tools/setup_env.sh, then
``source .venv/bin/activate``).  Under 8 minutes planned on one H200.  Steps:

1. the ``gpu``-marked tests (``pytest -m gpu``): the CUDA kernels against the reference,
   CUDA autocast with the guarded optimizer wrapper;
2. DenseViT-S pretraining through ``tools/train.py --amp`` (bfloat16) for ``--iters``
   iterations on generated images, with ``HostSyncCountHook``.  Checked: the fused InfoNCE
   kernel proved itself and was taken (no fall-back warning), no step was skipped, every
   logged value is finite, the global loss ends below chance (ln(queue + 1)), the hub share
   stays below 0.5, and a step between logging iterations waits for the GPU at most once
   (CUDA's own count of synchronising operations);
3. the benchmarks at the real shapes: ``tools/benchmark_pretrain.py --bf16`` (loss paths,
   the step against global-only) and ``tools/benchmark_lse_routes.py --bf16`` (the private
   attention operator against FlexAttention);
4. the data path: ``tools/benchmark_data.py --device cuda`` (a worker's CPU time per image on
   each data path, files and shards, and the device half of the augmentation -- crop and
   resize, flip, photometric ops -- in images/s); and "is the headline run data-bound?":
   the pretraining of step 2 (real images through ``densevit_s.py``'s loader, its workers
   the cores of this machine) against the same step on synthetic inputs (step 3), with the
   share of each iteration spent waiting for data and ``DataThroughputHook``'s warnings.

Prints one table and writes ``<out>/gpu_check.json``; each step's output is kept under
``<out>``.  Exit status 1 when a check fails.
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FALLBACK = 'failed its check'
SKIPPED = ('non-finite loss or gradients', 'float16 gradients overflowed')


def run(command, log_path, timeout):
    """Run ``command`` in the repository, its output to ``log_path``; exit code, seconds."""
    start = time.time()
    with open(log_path, 'w') as log:
        try:
            code = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = 'timeout'
    return code, time.time() - start


def gpu_tests(args, out):
    xml = osp.join(out, 'gpu_tests.xml')
    code, seconds = run([sys.executable, '-m', 'pytest', '-m', 'gpu', '-q', '-p',
                         'no:cacheprovider', f'--junitxml={xml}', 'tests'],
                        osp.join(out, 'gpu_tests.log'), 600)
    if not osp.exists(xml):
        return dict(ok=False, detail=f'pytest exited {code}, no report', seconds=seconds)
    suite = ET.parse(xml).getroot().find('testsuite')
    counts = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
    passed = counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']
    return dict(ok=counts['failures'] == counts['errors'] == 0 and (passed > 0 or args.quick),
                passed=passed, failed=counts['failures'] + counts['errors'],
                skipped=counts['skipped'], seconds=seconds,
                detail=f'{passed} passed, {counts["failures"] + counts["errors"]} failed, '
                       f'{counts["skipped"]} skipped')


def write_config(args, out, data_root):
    base = 'configs/pretrain/densevit_debug.py' if args.quick else 'configs/pretrain/densevit_s.py'
    warmup = max(1, args.iters // 6)
    path = osp.join(out, 'gpu_check_config.py')
    with open(path, 'w') as f:
        f.write(f'''_base_ = [{osp.join(ROOT, base)!r}]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={args.iters})
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end={warmup}),
    dict(type='CosineAnnealingLR', T_max={args.iters - warmup}, by_epoch=False,
         begin={warmup}, end={args.iters}),
]
custom_hooks = [dict(type='LambdaWarmupHook', start_iters={args.iters // 3}),
                dict(type='HostSyncCountHook')]
train_dataloader = dict(batch_size={args.batch}, num_workers={args.workers},
                        persistent_workers={args.workers > 0},
                        dataset=dict(data_root={data_root!r}, data_prefix='pretrain'))
default_hooks = dict(logger=dict(type='LoggerHook', interval={args.log_interval}),
                     checkpoint=dict(by_epoch=False, interval={args.iters}, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
''')
    return path


def pretraining(args, out):
    from densevit_mm.datasets import write_image_folder
    data_root = osp.join(out, 'data')
    if not osp.isdir(osp.join(data_root, 'pretrain')):
        write_image_folder(osp.join(data_root, 'pretrain'), args.images, args.image_size, 0)
    config = write_config(args, out, data_root)
    work = osp.join(out, 'train')
    code, seconds = run([sys.executable, 'tools/train.py', config, '--amp', '--work-dir', work],
                        osp.join(out, 'train.log'), 900)
    result = dict(exit_code=code, seconds=seconds)
    logs = sorted(glob.glob(osp.join(work, '*', '*.log')))
    text = open(logs[-1]).read() if logs else ''
    kernel = re.search(r'InfoNCE: fused kernel (\S+) checked for (\S+ / \S+ / dim \d+)', text)
    result['fused_kernel'] = f'{kernel.group(1)} ({kernel.group(2)})' if kernel else None
    result['fallback_warnings'] = text.count(FALLBACK)
    result['loader_behind_warnings'] = text.count('the data loader is behind')
    result['skipped_steps'] = sum(text.count(s) for s in SKIPPED)
    scalars = sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')))
    rows = [json.loads(line) for line in open(scalars[-1])] if scalars else []
    result['logged'] = rows
    values = [v for row in rows for v in row.values() if isinstance(v, float)]
    result['all_finite'] = bool(values) and all(math.isfinite(v) for v in values)
    if rows:
        last = rows[-1]
        weight = 1 - last.get('loss_lambda', 0.)
        result['global_loss_unweighted'] = last['loss_global'] / weight
        result['hub_share'] = last.get('hub_share')
        times = sorted(row['time'] for row in rows if 'time' in row)
        result['images_per_s'] = args.batch / times[len(times) // 2] if times else None
        waits = sorted(row['data_time'] / row['time'] for row in rows[1:]
                       if row.get('time') and 'data_time' in row)  # the first: start-up
        result['data_wait_share'] = waits[len(waits) // 2] if waits else None
    queue_len = 1024 if args.quick else 65536
    result['chance'] = math.log(queue_len + 1)
    syncs = osp.join(work, 'host_syncs_rank0.pt')
    if osp.exists(syncs):
        counts = torch.load(syncs, weights_only=True)
        # between logging iterations, after the first (kernel checks, first reads)
        steady = [c for it, c in counts.items()
                  if 0 < it < args.iters - 1 and (it + 1) % args.log_interval]
        key = 'cuda_sync' if args.device == 'cuda' else None
        per_step = [c.get(key, 0) if key else
                    sum(n for k, n in c.items() if k.startswith('read:')) for c in steady]
        result['syncs_per_step'] = max(per_step) if per_step else None
        result['sync_kind'] = key or 'host reads'
    result['checks'] = dict(
        ran=code == 0,
        fused_kernel_taken=result['fused_kernel'] is not None,
        no_fallback=result['fallback_warnings'] == 0,
        no_skipped_step=result['skipped_steps'] == 0,
        finite=result['all_finite'],
        # not judged at toy sizes: 12 iterations of a one-layer ViT on a 4 x 4 grid
        global_loss_below_chance=None if args.quick else
        result.get('global_loss_unweighted', math.inf) < result['chance'],
        hub_share_below_half=None if args.quick else (result.get('hub_share') or 1.) < 0.5,
        one_sync_per_step=result.get('syncs_per_step') is not None
        and result['syncs_per_step'] <= 1)
    return result


def benchmarks(args, out):
    results = {}
    common = ['--device', args.device, '--reps', str(args.reps)]
    commands = dict(
        pretrain=['tools/benchmark_pretrain.py', *common, '--bf16', '--out',
                  osp.join(out, 'benchmark_pretrain.json')],
        lse_routes=['tools/benchmark_lse_routes.py', *common, '--bf16', '--out',
                    osp.join(out, 'benchmark_lse_routes.json')],
        data=['tools/benchmark_data.py', '--device', args.device, '--rounds',
              str(args.reps), '--out', osp.join(out, 'benchmark_data.json')])
    if args.quick:
        commands['data'] += ['--num-images', '16', '--batch', '8']
        commands['pretrain'] += ['--loss-shape', '256', '1024', '128', '--batch', '2',
                                 '--skip-step']
        commands['lse_routes'] += ['--shape', '256', '1024', '128']
    for name, command in commands.items():
        code, seconds = run([sys.executable, *command], osp.join(out, f'{name}.log'), 600)
        path = command[command.index('--out') + 1]
        report = json.load(open(path)) if code == 0 and osp.exists(path) else None
        results[name] = dict(exit_code=code, seconds=seconds, report=report)
    return results


def summary_rows(tests, train, bench):
    """(what, value, ok) rows of the table."""
    c = train['checks']
    rows = [('gpu-marked tests', tests['detail'], tests['ok']),
            ('pretraining ran (tools/train.py --amp)', f'exit {train["exit_code"]}, '
             f'{train["seconds"]:.0f} s', c['ran']),
            ('fused InfoNCE kernel taken', train['fused_kernel'] or 'no', c['fused_kernel_taken']),
            ('fall-back warnings', train['fallback_warnings'], c['no_fallback']),
            ('skipped steps', train['skipped_steps'], c['no_skipped_step']),
            ('logged values finite', train['all_finite'], c['finite']),
            ('global loss at the end (unweighted; chance '
             f'{train["chance"]:.2f})', f'{train.get("global_loss_unweighted", float("nan")):.3f}',
             c['global_loss_below_chance']),
            ('hub share at the end', f'{train.get("hub_share") or float("nan"):.3f}',
             c['hub_share_below_half']),
            (f'{train.get("sync_kind")} per step between logs', train.get('syncs_per_step'),
             c['one_sync_per_step']),
            ('images / s (median iteration)', f'{train.get("images_per_s") or 0:.0f}', None)]
    pretrain = (bench['pretrain']['report'] or {})
    dense = pretrain.get('loss', {}).get('dense', {})
    if 'fused' in dense and 'time_vs_chunked' in dense['fused']:
        rows.append(('dense InfoNCE, fused vs chunked time',
                     f'{dense["fused"]["time_vs_chunked"]:.2f}', None))
    step = pretrain.get('step', {}).get('densevit-s (lambda 0.5)', {})
    if 'time_ratio' in step:
        rows.append(('DenseViT-S step vs global-only', f'{step["time_ratio"]:.3f}', None))
    routes = (bench['lse_routes']['report'] or {}).get('routes', {})
    for name, r in routes.items():
        rows.append((f'log-sum-exp route: {name}',
                     r.get('error') or f'{r["seconds"] * 1e3:.2f} ms, {r["time_vs_private"]:.2f}x',
                     None))
    rows += data_rows(train, step, bench['data']['report'] or {})
    for name, b in bench.items():
        rows.append((f'benchmark {name}', f'exit {b["exit_code"]}, {b["seconds"]:.0f} s',
                     b['exit_code'] == 0))
    return rows


def data_rows(train, step, data):
    """Rows on the data path: worker cost per path, the device half, and whether the
    pretraining with real data loading keeps the pace of the step on synthetic inputs."""
    rows = []
    for name, r in data.get('variants', {}).items():
        rows.append((f'worker CPU ms / image: {name}', f'{r["cpu_ms_per_image"]:.2f} '
                     f'({r["vs_decode"]:.2f} decodes, {r["cores_per_gpu"]:.1f} cores per GPU)',
                     None))
    for name, ms in data.get('device_part', {}).get('ms_per_image', {}).items():
        rows.append((f'device half of {name}', f'{1e3 / ms:.0f} images/s', None))
    if train.get('data_wait_share') is not None:
        rows.append(('share of an iteration waiting for data (median, real loader)',
                     f'{train["data_wait_share"]:.1%}, {train["loader_behind_warnings"]} '
                     'DataThroughputHook warnings', None))
    if train.get('images_per_s') and 'images_per_s' in step:
        rows.append(('pretraining images/s, real data loading vs synthetic inputs',
                     f'{train["images_per_s"]:.0f} vs {step["images_per_s"]:.0f} '
                     f'({train["images_per_s"] / step["images_per_s"]:.2f})', None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='work_dirs/gpu_check')
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--quick', action='store_true',
                        help='toy sizes (debug model, 12 iterations): to test this script')
    parser.add_argument('--iters', type=int)
    parser.add_argument('--batch', type=int)
    parser.add_argument('--reps', type=int, default=3, help='benchmark repetitions')
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('tools/gpu_check.py: no CUDA device here; --device cpu --quick runs '
                         'the same steps at toy sizes')
    args.iters = args.iters or (12 if args.quick else 300)
    args.batch = args.batch or (8 if args.quick else 64)
    args.log_interval = 4 if args.quick else 50
    args.images, args.image_size = (64, 64) if args.quick else (512, 256)
    args.workers = 0 if args.quick else min(16, os.cpu_count() or 1)
    out = osp.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    report = dict(device=torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu',
                  torch=torch.__version__, quick=args.quick, iters=args.iters, batch=args.batch)
    if args.device == 'cuda':
        from densevit_mm.engine import bf16_supported
        report.update(capability=list(torch.cuda.get_device_capability()),
                      native_bf16=bf16_supported('cuda'))
    report['tests'] = gpu_tests(args, out)
    report['pretraining'] = pretraining(args, out)
    report['benchmarks'] = benchmarks(args, out)
    rows = summary_rows(report['tests'], report['pretraining'], report['benchmarks'])
    report['ok'] = all(ok is not False for _, _, ok in rows)
    report['seconds'] = time.time() - start
    with open(osp.join(out, 'gpu_check.json'), 'w') as f:
        json.dump(report, f, indent=2, default=str)
    print(f'\nGPU check on {report["device"]} (torch {report["torch"]}), '
          f'{report["seconds"]:.0f} s; details in {out}')
    print('| check | value | verdict |')
    print('|---|---|---|')
    for what, value, ok in rows:
        print(f'| {what} | {value} | {"" if ok is None else "ok" if ok else "FAILED"} |')
    print(f'\n{"all checks passed" if report["ok"] else "SOME CHECKS FAILED"}; '
          f'wrote {osp.join(out, "gpu_check.json")}')
    sys.exit(0 if report['ok'] else 1)


if __name__ == '__main__':
    main()
