# Built-in benchmark, partly frozen segmentation: the Semantic FPN of
# ./fpn_densevit-mini_builtin-seg.py (all four layers, rescaled x4 x2 x1 x0.5) trained on a
# frozen backbone.  Where the linear probe (./linear_densevit-mini_builtin-seg.py) reads the
# last layer's tokens one by one, this decoder combines every layer and neighbouring patches;
# fine-tuning the whole backbone on 64 images relearns it from any start (README).
# Random init: --cfg-options model.backbone.init_cfg=None
_base_ = ['./fpn_densevit-mini_builtin-seg.py']

benchmark_column = 'mIoU FPN (frozen backbone)'  # tools/benchmark_table.py's column
model = dict(backbone=dict(frozen_stages=4))
