"""Read ViT weights of any common origin into DenseViT's key layout, and write them back out.

Sources are told apart by their keys, never by file names:

- DenseViT: a backbone-only file or a pretraining checkpoint (backbone under ``backbone.``;
  the momentum encoder under ``target_encoder.`` is ignored);
- timm layout (``blocks.0.norm1.weight``): DeiT (``model``), DINO (plain, or a full training
  checkpoint's ``teacher`` with ``backbone.``), MAE (``model``; its decoder is ignored),
  MoCo v3 (``state_dict`` with ``module.base_encoder.``; the momentum encoder is ignored).
"""
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch

from .checkpoint_file import CheckpointFileError, describe_non_finite, load_checkpoint_file

# timm name -> DenseViT name, for the parts inside a transformer block and at top level.
_BLOCK_KEYS = (('norm1.', 'ln1.'), ('norm2.', 'ln2.'), ('attn.qkv.', 'attn.qkv.'),
               ('attn.proj.', 'attn.proj.'), ('mlp.fc1.', 'ffn.layers.0.0.'),
               ('mlp.fc2.', 'ffn.layers.1.'))
_TOP_KEYS = (('cls_token', 'cls_token'), ('pos_embed', 'pos_embed'),
             ('patch_embed.proj.', 'patch_embed.projection.'), ('norm.', 'ln1.'))
# Where the backbone sits inside other methods' checkpoints, most specific first.
_PREFERRED_PREFIXES = ('', 'backbone.', 'module.base_encoder.', 'base_encoder.', 'module.',
                       'encoder.', 'teacher.backbone.', 'student.backbone.')
_MARKERS = {'densevit': 'layers.0.ln1.weight', 'timm': 'blocks.0.norm1.weight'}


def _rename(key: str, table, block_table, src_blocks: str, dst_blocks: str) -> Optional[str]:
    if key.startswith(src_blocks):
        index, rest = key[len(src_blocks):].split('.', 1)
        for src, dst in block_table:
            if rest.startswith(src):
                return f'{dst_blocks}{index}.{dst}{rest[len(src):]}'
        return None
    for src, dst in table:
        if key == src or (src.endswith('.') and key.startswith(src)):
            return dst + key[len(src):]
    return None


def _convert(state, table, block_table, src_blocks, dst_blocks):
    out, dropped = OrderedDict(), []
    for key, value in state.items():
        new = _rename(key, table, block_table, src_blocks, dst_blocks)
        if new is None:
            dropped.append(key)
        else:
            out[new] = value
    return out, dropped


def timm_to_densevit(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], list]:
    """Rename a timm-layout ViT state dict. Returns the new dict and the keys left out."""
    return _convert(state, _TOP_KEYS, _BLOCK_KEYS, 'blocks.', 'layers.')


def densevit_to_timm(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], list]:
    """Rename a DenseViT backbone state dict to timm's layout (no classifier head)."""
    def swap(table):
        return tuple((dst, src) for src, dst in table)
    return _convert(state, swap(_TOP_KEYS), swap(_BLOCK_KEYS), 'layers.', 'blocks.')


def _flatten(obj, prefix: str = '') -> Dict[str, torch.Tensor]:
    """All tensors of nested dicts, keyed by their dotted path (``state_dict.``, ``model.``
    and friends are unwrapped by :func:`find_backbone` through the prefix)."""
    out = OrderedDict()
    if isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.update(_flatten(value, f'{prefix}{key}.'))
    return out


def find_backbone(checkpoint: dict, prefer_prefix: Optional[str] = None
                  ) -> Tuple[str, str, Dict[str, torch.Tensor]]:
    """Locate the ViT backbone in a loaded checkpoint of any supported origin.

    Returns:
        tuple: ``(format, prefix, state)`` with format ``'densevit'`` or ``'timm'``, the
        prefix found (e.g. ``'state_dict.backbone.'``), and the backbone's tensors with the
        prefix removed, in the source layout.
    """
    flat = _flatten(checkpoint)
    candidates = {}
    for fmt, marker in _MARKERS.items():
        for key in flat:
            if key.endswith(marker):
                candidates.setdefault(key[:-len(marker)], fmt)
    if not candidates:
        raise ValueError('no ViT backbone found in the checkpoint: expected keys ending in '
                         f'{sorted(_MARKERS.values())} (DenseViT or timm layout)')
    wrappers = ('', 'state_dict.', 'model.', 'teacher.', 'module.')
    order = [w + p for p in ((prefer_prefix,) if prefer_prefix else ()) + _PREFERRED_PREFIXES
             for w in wrappers]
    prefix = next((p for p in order if p in candidates), None)
    if prefix is None:
        raise ValueError(f'several possible backbones in the checkpoint, under prefixes '
                         f'{sorted(candidates)}; convert it with tools/convert_checkpoint.py '
                         '--prefix PREFIX')
    state = OrderedDict((k[len(prefix):], v) for k, v in flat.items() if k.startswith(prefix))
    # Keys of the chosen prefix that belong to a nested candidate (e.g. MAE's decoder).
    for other in candidates:
        if other != prefix and other.startswith(prefix):
            state = OrderedDict((k, v) for k, v in state.items()
                                if not (prefix + k).startswith(other))
    return candidates[prefix], prefix, state


def load_densevit_state_dict(path: str, prefer_prefix: Optional[str] = None
                             ) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Load ``path`` (``weights_only``) and return the backbone in DenseViT's layout.

    Raises:
        FileNotFoundError, CheckpointFileError: ``path`` is missing or not a checkpoint.
        ValueError: no backbone in it, or a backbone tensor holds ``nan`` / ``inf``.

    Returns:
        tuple: the state dict and a report ``dict(format, prefix, dropped)``, where
        ``dropped`` lists source keys that are not part of a DenseViT backbone (heads,
        distillation tokens, decoders), so a caller can refuse or report them.
    """
    checkpoint = load_checkpoint_file(path)
    fmt, prefix, state = find_backbone(checkpoint, prefer_prefix)
    bad = describe_non_finite(state)
    if bad:
        raise ValueError(f'refusing the backbone in {path}: {bad}. A diverged run wrote it; '
                         'take an earlier checkpoint of that run.')
    dropped = []
    if fmt == 'timm':
        state, dropped = timm_to_densevit(state)
    return state, dict(format=fmt, prefix=prefix, dropped=dropped)


def check_config_checkpoints(cfg, load_from: bool = True) -> None:
    """Read every local checkpoint file a training run of ``cfg`` will load, before anything
    is built: ``load_from`` and the DenseViT backbone's ``init_cfg=dict(type='Pretrained',
    checkpoint=...)``, which :meth:`DenseViT.init_weights` reads only once the data and the
    optimizer are set up.

    Args:
        cfg (Config): The training config.
        load_from (bool): Check ``load_from`` too; a resumed run reads its own checkpoint
            instead (its backbone is still initialised first). URLs there are left to
            mmengine. Defaults to True.

    Raises:
        FileNotFoundError, CheckpointFileError: a file is missing or no checkpoint; the
            message starts with the config key that names it.
    """
    files = []
    if load_from and cfg.get('load_from') and '://' not in cfg.load_from:
        files.append(('load_from', cfg.load_from))
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    init_cfg = backbone.get('init_cfg') if isinstance(backbone, dict) else None
    # the condition under which DenseViT.init_weights loads it; an empty path is its error
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained' \
            and init_cfg.get('checkpoint'):
        files.append(('model.backbone.init_cfg.checkpoint', init_cfg['checkpoint']))
    for key, path in files:
        try:
            load_checkpoint_file(path, mmap=True)
        except FileNotFoundError as err:
            hint = (' (random init: --cfg-options model.backbone.init_cfg=None)'
                    if key.startswith('model.') else '')
            raise FileNotFoundError(f'{key}: {err}{hint}') from err
        except CheckpointFileError as err:
            raise CheckpointFileError(f'{key}: {err}') from err
