from .dense_contrastive_head import DenseContrastiveHead

__all__ = ['DenseContrastiveHead']
