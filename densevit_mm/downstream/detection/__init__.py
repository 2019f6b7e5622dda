"""mmdet components for DenseViT: ViTDet's simple feature pyramid (its LayerNorm-2d is
mmpretrain's ``LN2d``), and the COCO metric that scores no detection as AP 0."""
from .coco_metric import ZeroAwareCocoMetric
from .simple_feature_pyramid import SimpleFeaturePyramid

__all__ = ['SimpleFeaturePyramid', 'ZeroAwareCocoMetric']
