# DenseViT-Ti pretraining on ImageNet-1k: the DenseViT-S recipe with a 192-wide backbone.
#   tools/dist_train.sh configs/pretrain/densevit_ti.py 8
_base_ = ['./densevit_s.py']

model = dict(
    backbone=dict(arch='densevit-ti'),
    neck=dict(in_channels=192))
