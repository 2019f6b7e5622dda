"""Command-line arguments that tools/train.py and tools/test.py share (OpenMMLab's names)."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` for ``--cfg-options``, without its surprises for paths.

    mmengine removes every space from a value and splits it at commas.  Here a value that is
    not a list or tuple keeps its spaces (``data_root=/data/my images/`` after the shell's
    quoting), and a value in quotes is taken verbatim, commas included
    (``"data_root='/data/a,b/'"``).  Lists and tuples (``[1,2]``, ``(1,2)``, ``1,2``) are
    parsed as mmengine parses them.
    """

    @staticmethod
    def _parse_iterable(val: str):
        text = val.strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"':
            return text[1:-1]
        if not text.startswith(('[', '(')) and ',' not in text:
            return DictAction._parse_int_float_bool(text)
        return DictAction._parse_iterable(text)


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--local-rank``."""
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=CfgOptionsAction,
        help='override config settings, e.g. train_dataloader.batch_size=32; quote a value '
        'with spaces for the shell ("...data_root=/data/my images/"), and add inner quotes '
        "to keep commas (\"...data_root='/data/a,b/'\")")
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def apply_runner_args(cfg: Config, args: argparse.Namespace) -> None:
    """Apply the shared arguments to ``cfg`` (``--cfg-options`` last, so it wins)."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
