# ADE20K semantic segmentation, UperNet + DenseViT-S, the MAE / BEiT protocol of mmseg:
# 512x512 crops, 160k iterations, 8 GPUs x 2 images, AdamW lr 1e-4 wd 0.05, layer decay
# 0.65, 1500 linear warm-up iterations then poly decay, sliding-window test.
#   tools/dist_train.sh configs/segmentation/upernet_densevit-s_8xb2-160k_ade20k-512x512.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/densevit_s/epoch_200.pth
_base_ = [
    '../_base_/models/upernet_densevit-s.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]

crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size))

optim_wrapper = dict(
    _delete_=True,
    type='mmpretrain.GuardedOptimWrapper',  # skips steps with nan / inf loss or gradients
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='DenseViTLayerDecayOptimizerConstructor',
    # mmpretrain's layer-decay constructor, handed the backbone's layer depths; no weight
    # decay on biases, norms (every 1-D parameter), position embedding and CLS token
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65, flat_decay_mult=0.,
                       custom_keys={'.pos_embed': dict(decay_mult=0.),
                                    '.cls_token': dict(decay_mult=0.)}))

# resumes by skipping the batches done, by index (mmengine's loop would load them again)
train_cfg = dict(type='mmpretrain.ResumableIterBasedTrainLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500, end=160000),
]

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
# checkpoints written atomically, never with nan weights, and on SIGTERM (preemption) at once
default_hooks = dict(checkpoint=dict(type='mmpretrain.CrashSafeCheckpointHook'))
