"""mmdet components for DenseViT: ViTDet's simple feature pyramid (its LayerNorm-2d is
mmpretrain's ``LN2d``)."""
from .simple_feature_pyramid import SimpleFeaturePyramid

__all__ = ['SimpleFeaturePyramid']
