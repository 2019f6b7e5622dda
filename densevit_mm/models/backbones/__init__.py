from .densevit import DenseViT

__all__ = ['DenseViT']
