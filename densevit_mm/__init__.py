"""DenseViT: dense contrastive pretraining of Vision Transformers on OpenMMLab.

Importing the package registers its models and hooks in mmpretrain's registries and
applies the stack workarounds of :mod:`densevit_mm.compat`.  It needs neither mmseg nor
mmdet; :mod:`densevit_mm.downstream` (imported only by transfer configs) does.
"""
from . import compat

compat.apply()

from . import datasets, engine, models  # noqa: E402,F401

__version__ = '0.1.0'
