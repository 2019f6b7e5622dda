"""mmdet components for DenseViT: ViTDet's simple feature pyramid and its LayerNorm-2d."""
from .layer_norm_2d import LayerNorm2d
from .simple_feature_pyramid import SimpleFeaturePyramid

__all__ = ['LayerNorm2d', 'SimpleFeaturePyramid']
