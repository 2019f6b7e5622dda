# Built-in benchmark, pretraining baseline: the same model and data with the global (CLS)
# contrastive term alone (lambda = 0, no dense projections) -- a MoCo v3-style ViT baseline
# with a MoCo v2 queue.
_base_ = ['./densevit-mini_pretrain_builtin.py']

model = dict(
    loss_lambda=0.,
    neck=dict(dense_out_channels=None),
    head=dict(loss_dense=None))
custom_hooks = []
