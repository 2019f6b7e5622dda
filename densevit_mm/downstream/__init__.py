"""What mmseg and mmdet need for DenseViT and lack; imported only by transfer configs.

``densevit_mm.downstream`` needs only mmengine and mmpretrain;
``densevit_mm.downstream.detection`` registers mmdet components and needs mmdet.
"""
from .layer_decay_optim_constructor import DenseViTLayerDecayOptimizerConstructor

__all__ = ['DenseViTLayerDecayOptimizerConstructor']
