# DenseCL on a ViT: lambda 0.5, temperature 0.2, two queues of 65536 keys of dim 128.
model = dict(
    type='DenseViTSelfSup',
    # mmengine convention (online weight per update): MoCo m = 0.999, as DenseCL / MoCo v2 --
    # the queue holds keys of the last 128 steps (65536 / 512), which must come from nearly
    # the same encoder; also the best of the recipe study (docs/builtin_benchmark.md)
    momentum=0.001,
    loss_lambda=0.5,
    backbone=dict(type='DenseViT', arch='densevit-s', img_size=224, patch_size=16,
                  out_type='cls_and_patch'),
    neck=dict(type='DenseProjectionNeck', in_channels=384, hid_channels=2048,
              out_channels=128, dense_out_channels=128),
    head=dict(
        type='DenseContrastiveHead',
        loss_global=dict(type='GlobalContrastiveLoss', queue_len=65536, feat_dim=128,
                         temperature=0.2),
        loss_dense=dict(type='DenseContrastiveLoss', queue_len=65536, feat_dim=128,
                        temperature=0.2)),
)

# Every rank writes the same all-gathered keys, so the queues (2 x 32 MB) are identical
# everywhere: DDP need not broadcast the buffers before every forward pass (its default).
model_wrapper_cfg = dict(type='MMDistributedDataParallel', broadcast_buffers=False)

# DenseCL trains the global term alone for its first 1000 iterations.
custom_hooks = [dict(type='LambdaWarmupHook', start_iters=1000)]
