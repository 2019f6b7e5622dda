from .crash_safe_checkpoint_hook import (PREEMPTED_EXIT_CODE, CrashSafeCheckpointHook,
                                         TrainingPreempted)
from .data_throughput_hook import DataThroughputHook
from .deferred_runtime_info_hook import DeferredRuntimeInfoHook
from .host_sync_count_hook import HostSyncCountHook
from .lambda_warmup_hook import LambdaWarmupHook
from .unreadable_image_hook import UnreadableImageHook

__all__ = ['CrashSafeCheckpointHook', 'DataThroughputHook', 'DeferredRuntimeInfoHook',
           'HostSyncCountHook', 'LambdaWarmupHook', 'PREEMPTED_EXIT_CODE', 'TrainingPreempted',
           'UnreadableImageHook']
