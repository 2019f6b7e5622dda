# OpenMMLab runtime shared by every DenseViT config (mmpretrain scope).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['densevit_mm'], allow_failed_imports=False)

default_hooks = dict(
    # reads the step's log values to the host once per logging interval (mmengine's
    # RuntimeInfoHook reads each one every step, which stalls a GPU) and logs nothing of a
    # step that GuardedOptimWrapper skipped
    runtime_info=dict(type='DeferredRuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    # LoggerHook prints the ETA with every log line.
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # written atomically, never with nan weights, and on SIGTERM (preemption) at once
    checkpoint=dict(type='CrashSafeCheckpointHook', interval=10, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
    # warns, with the workers that would keep up, when steps wait for their data
    data_throughput=dict(type='DataThroughputHook'),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py switches to gloo when CUDA is absent.
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True, deterministic=False)
