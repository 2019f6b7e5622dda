from .densevit_selfsup import DenseViTSelfSup

__all__ = ['DenseViTSelfSup']
