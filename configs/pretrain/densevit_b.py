# DenseViT-B pretraining on ImageNet-1k: the DenseViT-S recipe with a 768-wide backbone.
#   tools/dist_train.sh configs/pretrain/densevit_b.py 8
_base_ = ['./densevit_s.py']

model = dict(
    backbone=dict(arch='densevit-b'),
    neck=dict(in_channels=768))
