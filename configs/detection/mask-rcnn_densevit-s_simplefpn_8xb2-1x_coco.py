# COCO detection + instance segmentation, Mask R-CNN (ViTDet design) on DenseViT-S, the 1x
# schedule of SSL comparisons: 12 epochs, lr steps at 8 and 11, 8 GPUs x 2 images, mmdet's
# standard 1333x800 resize + flip, AdamW lr 1e-4 wd 0.1, layer decay 0.7.
#   tools/dist_train.sh configs/detection/mask-rcnn_densevit-s_simplefpn_8xb2-1x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/densevit_s/epoch_200.pth
_base_ = [
    '../_base_/models/mask-rcnn_densevit-s_simplefpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

# AdamW with DenseViT-aware layer-wise lr decay (ViTDet: 0.7 for ViT-B).
optim_wrapper = dict(
    _delete_=True,
    type='mmpretrain.GuardedOptimWrapper',  # skips steps with nan / inf loss or gradients
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    constructor='DenseViTLayerDecayOptimizerConstructor',
    # mmpretrain's layer-decay constructor, handed the backbone's layer depths; no weight
    # decay on biases, norms (every 1-D parameter), position embedding and CLS token
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.7, flat_decay_mult=0.,
                       custom_keys={'.pos_embed': dict(decay_mult=0.),
                                    '.cls_token': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=False, base_batch_size=16)
# checkpoints written atomically, never with nan weights, and on SIGTERM (preemption) at once
default_hooks = dict(checkpoint=dict(type='mmpretrain.CrashSafeCheckpointHook'))
