"""Evaluate a checkpoint with a DenseViT config (linear probe, segmentation, detection).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out metrics.json]
                         [--cfg-options key=value ...]
Several GPUs or nodes: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES.
"""
import argparse
import json

from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from densevit_mm import compat
from densevit_mm.checkpoint import (CheckpointFileError, describe_non_finite,
                                    load_checkpoint_file)
from densevit_mm.runner_args import add_runner_args, apply_runner_args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a DenseViT model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='also write the metrics to this JSON file')
    add_runner_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        state = load_checkpoint_file(args.checkpoint, mmap=True).get('state_dict', {})
    except (CheckpointFileError, FileNotFoundError) as err:
        raise SystemExit(f'tools/test.py: {err}') from err
    bad = describe_non_finite(state)
    if bad:  # its metrics would be meaningless, and would still reach the tables
        raise SystemExit(f'tools/test.py: refusing {args.checkpoint}: {bad}')
    cfg = Config.fromfile(args.config)
    cfg.load_from = None  # loaded strictly below: a mismatched checkpoint must not half-load
    apply_runner_args(cfg, args)
    compat.setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    compat.revert_sync_batchnorm_without_cuda(runner)
    runner.load_checkpoint(args.checkpoint, map_location='cpu', strict=True)
    metrics = runner.test()
    if args.out and is_main_process():
        with open(args.out, 'w') as f:
            json.dump(metrics, f, indent=2)


if __name__ == '__main__':
    main()
