"""Train a DenseViT config (pretraining, linear probe, segmentation or detection).

Same flags as mmpretrain / mmseg / mmdet's tools/train.py:
    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                                 [--no-validate] [--cfg-options key=value ...]
Several GPUs, nodes, or CPU processes: tools/dist_train.sh CONFIG NUM_PROCESSES.
"""
import argparse

from mmengine.config import Config
from mmengine.runner import Runner

from densevit_mm import compat
from densevit_mm.runner_args import add_runner_args, apply_runner_args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a DenseViT model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest one in the work dir '
        'if none is given')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training')
    parser.add_argument('--no-validate', action='store_true',
                        help='skip validation during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by actual batch size / auto_scale_lr.base_batch_size')
    add_runner_args(parser)
    return parser.parse_args()


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, the config has '
                             f'{wrapper}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    apply_runner_args(cfg, args)
    return cfg


def main() -> None:
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    compat.setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    compat.revert_sync_batchnorm_without_cuda(runner)
    runner.train()


if __name__ == '__main__':
    main()
