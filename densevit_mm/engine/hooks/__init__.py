from .crash_safe_checkpoint_hook import (PREEMPTED_EXIT_CODE, CrashSafeCheckpointHook,
                                         TrainingPreempted)
from .lambda_warmup_hook import LambdaWarmupHook
from .unreadable_image_hook import UnreadableImageHook

__all__ = ['CrashSafeCheckpointHook', 'LambdaWarmupHook', 'PREEMPTED_EXIT_CODE',
           'TrainingPreempted', 'UnreadableImageHook']
