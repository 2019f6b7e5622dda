"""Train a DenseViT config (pretraining, linear probe, segmentation or detection).

Same flags as mmpretrain / mmseg / mmdet's tools/train.py:
    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp [--amp-dtype T]]
                                 [--auto-scale-lr] [--no-validate] [--cfg-options key=value ...]
Several GPUs, nodes, or CPU processes: tools/dist_train.sh CONFIG NUM_PROCESSES.
Exit status 143: stopped by SIGTERM after saving a checkpoint (continue with --resume).
The work is done by densevit_mm/train.py (also ``python -m densevit_mm.train``).
"""
import signal


class EarlySigterm:
    """SIGTERM while the run starts, remembered for the checkpoint hook (as
    ``densevit_mm.train.EarlySigterm``, which cannot be imported yet: the package imports
    torch)."""
    received = False

    def __call__(self, signum, frame) -> None:
        self.received = True


# first, before the imports that take seconds
signal.signal(signal.SIGTERM, EarlySigterm())

import argparse  # noqa: E402,F401  (tests build the parsed arguments with train.argparse)

from densevit_mm import train  # noqa: E402

merge_args, parse_args = train.merge_args, train.parse_args


def main() -> None:
    train.main(prog='tools/train.py')


if __name__ == '__main__':
    main()
