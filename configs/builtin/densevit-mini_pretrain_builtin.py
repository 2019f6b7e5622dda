# Built-in benchmark, pretraining: DenseViT (lambda 0.5) at a size a laptop CPU trains in
# minutes: ViT-Ti width (192), 4 layers, 96-pixel views of the generated 128-pixel scenes in
# data/builtin/pretrain (tools/run_benchmark.py writes them).
_base_ = ['../pretrain/densevit_s.py']

img_size = 96  # a 6 x 6 grid of 16-pixel patches
queue_len = 4096
mini_arch = dict(_delete_=True, embed_dims=192, num_layers=4, num_heads=3,
                 feedforward_channels=768)

# stop_grad_conv1: the patch projection stays random, as in MoCo v3.  Trained, it becomes a
# mean-colour detector on these scenes (92-98% of its output variance) and caused most of the
# fine-tuning deficit against random init (docs/builtin_benchmark.md, section 5).
model = dict(
    backbone=dict(arch=mini_arch, img_size=img_size, stop_grad_conv1=True),
    neck=dict(in_channels=192, hid_channels=512),
    head=dict(
        loss_global=dict(queue_len=queue_len),
        loss_dense=dict(queue_len=queue_len)))

# 1000 iterations in DenseCL's ImageNet run; 2 epochs here.
custom_hooks = [dict(type='LambdaWarmupHook', start_iters=60)]

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
# the augmentation in the data workers (faster than on the device when the device is a CPU)
data_preprocessor = dict(type='SelfSupDataPreprocessor')
train_dataloader = dict(
    collate_fn=dict(type='default_collate'),
    batch_size=64,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root='data/builtin/',
        data_prefix='pretrain',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='MultiViewWithGeometry', num_views=2, transforms=[view_pipeline]),
            dict(type='PackInputs', algorithm_keys=['view_geometry']),
        ]))

max_epochs = 8
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, eta_min=1e-5, by_epoch=True,
         begin=1, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
auto_scale_lr = dict(base_batch_size=64)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
