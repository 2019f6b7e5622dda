# Built-in benchmark, pretraining baseline: the same model and data with lambda = 0, i.e. the
# global (CLS) contrastive term alone -- a MoCo v3-style ViT baseline with a MoCo v2 queue.
_base_ = ['./densevit-mini_pretrain_builtin.py']

model = dict(loss_lambda=0.)
custom_hooks = []
