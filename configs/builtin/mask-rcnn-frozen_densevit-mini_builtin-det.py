# Built-in benchmark, detection + instance segmentation on a frozen backbone: the Mask R-CNN of
# ./mask-rcnn_densevit-mini_builtin-det.py with the mini backbone frozen and run as it was
# pretrained (CLS token, global attention in every layer: the windowed variant would score
# features the backbone never computed).  Only the pyramid, RPN and RoI heads learn, with a
# plain AdamW (layer decay has nothing to decay).  Mask AP comes with the box AP.
# Not in the benchmark: after 60 iterations (AP x 100, 2 seeds each) random init scores 0.1 and
# 0.1 box AP, the oracle 1.1 and 1.1 (mask AP 1.1, 1.7): it ranks them, but at about 150
# CPU-seconds a run, six times ./fcos-frozen_densevit-mini_builtin-det.py, which separates
# them by 10 seed deviations.
# Random init: --cfg-options model.backbone.init_cfg=None
_base_ = ['./mask-rcnn_densevit-mini_builtin-det.py']

benchmark_column = 'APbox (Mask R-CNN, frozen backbone)'  # tools/benchmark_table.py's column
model = dict(backbone=dict(with_cls_token=True, window_size=None, global_attn_indexes=(),
                           drop_path_rate=0., frozen_stages=4))

max_iters = 60  # as the main job's PROTOCOLS entry (the lr step at 80% must fall inside)
optim_wrapper = dict(
    _delete_=True, type='mmpretrain.GuardedOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.8)], gamma=0.1),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
