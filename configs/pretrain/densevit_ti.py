# DenseViT-TI pretraining on ImageNet-1k: 8 GPUs x 64 images, 200 epochs.
#   tools/dist_train.sh configs/pretrain/densevit_ti.py 8
_base_ = [
    '../_base_/models/densevit_selfsup.py',
    '../_base_/datasets/imagenet_densecl_twoview.py',
    '../_base_/schedules/adamw_cosine_200e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(arch='densevit-ti'),
    neck=dict(in_channels=192))
