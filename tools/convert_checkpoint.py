"""Convert ViT checkpoints between DenseViT and timm layouts.

    # pretraining checkpoint -> backbone-only file (keys 'backbone.*', what transfer configs load)
    python tools/convert_checkpoint.py work_dirs/densevit_s/epoch_200.pth densevit_s_backbone.pth
    # DeiT / DINO / MAE / MoCo v3 ViT (timm layout, as distributed) -> DenseViT backbone-only
    python tools/convert_checkpoint.py mae_pretrain_vit_base.pth mae_b_densevit.pth
    # DenseViT -> timm layout ({'model': state_dict}, loads into timm's ViT with num_classes=0)
    python tools/convert_checkpoint.py densevit_s_backbone.pth densevit_s_timm.pth --to timm

The source format is detected from the keys.  The output is written to a temporary file and
renamed into place, so an interrupted run never leaves a half-written checkpoint.
"""
import argparse
import os

from densevit_mm.checkpoint import (CheckpointFileError, atomic_save, densevit_to_timm,
                                    load_densevit_state_dict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='checkpoint to read')
    parser.add_argument('dst', help='file to write')
    parser.add_argument('--to', choices=['densevit', 'timm'], default='densevit',
                        help='output layout (default: densevit backbone-only)')
    parser.add_argument('--prefix', help='where the backbone sits in src, when ambiguous '
                        '(e.g. module.momentum_encoder.)')
    args = parser.parse_args()
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        parser.error('dst must differ from src')

    try:
        state, report = load_densevit_state_dict(args.src, args.prefix)
    except (FileNotFoundError, CheckpointFileError, ValueError) as err:
        # one line, as tools/train.py says it: the file, what it is, what to do
        message = str(err) if args.src in str(err) else f'{args.src}: {err}'
        raise SystemExit(f'tools/convert_checkpoint.py: {message}') from None
    print(f'read {len(state)} backbone tensors from {args.src} '
          f'({report["format"]} layout, prefix {report["prefix"]!r})')
    if report['dropped']:
        print(f'left out {len(report["dropped"])} keys that are not part of the backbone: '
              f'{", ".join(report["dropped"][:8])}{" ..." if len(report["dropped"]) > 8 else ""}')
    if args.to == 'timm':
        state, unknown = densevit_to_timm(state)
        if unknown:
            raise SystemExit(f'cannot express these DenseViT keys in timm layout: {unknown}')
        out = dict(model=state)
    else:
        out = dict(state_dict={f'backbone.{k}': v for k, v in state.items()},
                   meta=dict(source=os.path.basename(args.src), source_format=report['format']))
    atomic_save(out, args.dst)
    print(f'wrote {args.dst} ({args.to} layout)')


if __name__ == '__main__':
    main()
