from .densevit_selfsup import DenseViTSelfSup
from .dino import DINO, DINOLoss, DINONeck
from .ibot import iBOT, iBOTLoss

__all__ = ['DenseViTSelfSup']
__all__ += ['DINO', 'DINOLoss', 'DINONeck', 'iBOT', 'iBOTLoss']
