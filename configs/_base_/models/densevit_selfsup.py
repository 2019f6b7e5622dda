# DenseCL on a ViT: lambda 0.5, temperature 0.2, two queues of 65536 keys of dim 128.
model = dict(
    type='DenseViTSelfSup',
    momentum=0.01,  # mmengine convention (online weight); MoCo m = 0.99, as MoCo v3 ViT
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

# DenseCL trains the global term alone for its first 1000 iterations.
custom_hooks = [dict(type='LambdaWarmupHook', start_iters=1000)]
