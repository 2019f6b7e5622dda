# Depth-1 DenseViT on small generated images: the built-in recipe
# (../builtin/densevit-mini_pretrain_builtin.py) cut down to seconds on a laptop CPU, for
# tests and quick checks.  Make the data with
#   python tools/make_synthetic_data.py data/synthetic --num-images 256 --size 64
_base_ = ['../builtin/densevit-mini_pretrain_builtin.py']

queue_len = 1024

model = dict(
    backbone=dict(arch='densevit-debug'),
    neck=dict(hid_channels=256),
    head=dict(
        loss_global=dict(queue_len=queue_len),
        loss_dense=dict(queue_len=queue_len)))

custom_hooks = [dict(type='LambdaWarmupHook', start_iters=10)]

train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root='data/synthetic/'))

optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', T_max=90, by_epoch=False, begin=10, end=100),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=100)
auto_scale_lr = dict(base_batch_size=16)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(by_epoch=False, interval=50, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
