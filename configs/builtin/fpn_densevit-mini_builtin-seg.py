# Built-in benchmark, segmentation: the Semantic FPN protocol
# (../segmentation/fpn_densevit-s_4xb4-40k_ade20k-512x512.py) on the generated ADE20K-layout
# set data/builtin/ade (64 labelled training images: few, so pretraining matters), 128 pixels,
# with the mini backbone.  Random init: --cfg-options model.backbone.init_cfg=None
_base_ = ['../segmentation/fpn_densevit-s_4xb4-40k_ade20k-512x512.py']

benchmark_column = 'mIoU FPN (fine-tuned)'  # tools/benchmark_table.py's column
mini_arch = dict(_delete_=True, embed_dims=192, num_layers=4, num_heads=3,
                 feedforward_channels=768)
checkpoint = 'work_dirs/builtin/pretrain_densevit/epoch_8.pth'  # where run_benchmark puts it
crop_size = (128, 128)
classes = ('background', 'disc', 'box', 'triangle', 'ring')
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=mini_arch, img_size=128, out_indices=(0, 1, 2, 3),
                  init_cfg=dict(checkpoint=checkpoint)),
    neck=[
        dict(type='Feature2Pyramid', embed_dim=192, rescales=[4, 2, 1, 0.5],
             norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[192, 192, 192, 192], out_channels=64, num_outs=4),
    ],
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=64, num_classes=len(classes)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# mmseg's generic dataset class with ADE20K's file layout and suffixes, and our classes
dataset = dict(
    type='BaseSegDataset',
    data_root='data/builtin/ade/ADEChallengeData2016',
    metainfo=dict(classes=classes),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8, num_workers=1,
    dataset=dict(_delete_=True, **dataset, pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/training',
                                  seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=8, num_workers=1,
    dataset=dict(_delete_=True, **dataset, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation')))
test_dataloader = val_dataloader

max_iters = 300
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=30, end=max_iters),
]
train_cfg = dict(type='mmpretrain.ResumableIterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1),
    visualization=dict(type='SegVisualizationHook', draw=False))
