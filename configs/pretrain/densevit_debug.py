# Depth-1 DenseViT on small generated images: seconds per iteration on a laptop CPU.
# The README's quick-start job and the tests run it; make the data with
#   python tools/make_synthetic_data.py data/synthetic --num-images 256 --size 64
_base_ = [
    '../_base_/models/densevit_selfsup.py',
    '../_base_/datasets/imagenet_densecl_twoview.py',
    '../_base_/default_runtime.py',
]

img_size = 64  # a 4 x 4 grid of 16-pixel patches
queue_len = 1024

model = dict(
    backbone=dict(arch='densevit-debug', img_size=img_size),
    neck=dict(in_channels=192, hid_channels=256),
    head=dict(
        loss_global=dict(queue_len=queue_len),
        loss_dense=dict(queue_len=queue_len)))

custom_hooks = [dict(type='LambdaWarmupHook', start_iters=10)]

view_pipeline = [
    dict(type='RandomResizedCropWithBox', scale=img_size, crop_ratio_range=(0.2, 1.),
         backend='pillow'),
    dict(
        type='RandomApply',
        transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4,
                         hue=0.1)],
        prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
         channel_weights=(0.114, 0.587, 0.2989)),
    dict(type='RandomFlip', prob=0.5),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root='data/synthetic/',
        data_prefix='pretrain',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='MultiViewWithGeometry', num_views=2, transforms=[view_pipeline]),
            dict(type='PackInputs', algorithm_keys=['view_geometry']),
        ]))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', T_max=90, by_epoch=False, begin=10, end=100),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=100)
auto_scale_lr = dict(base_batch_size=16)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=50, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
