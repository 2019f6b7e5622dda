from .checkpoint_file import (NO_SPACE, CheckpointFileError, DiskFullError, atomic_move,
                              atomic_save, atomic_write_text, describe_file, disk_full_error, describe_non_finite, load_checkpoint_file,
                              non_finite_tensors)
from .resume import ResumePlan, find_resume_checkpoint, plan_resume
from .work_dir import (WorkDirBusyError, WorkDirLock, remove_stale_temporaries,
                       temporary_path)
from .vit_checkpoint import (check_config_checkpoints, densevit_to_timm, find_backbone,
                             load_densevit_state_dict, timm_to_densevit)

__all__ = ['NO_SPACE', 'CheckpointFileError', 'DiskFullError', 'disk_full_error', 'ResumePlan', 'atomic_move', 'atomic_save',
           'atomic_write_text', 'check_config_checkpoints', 'densevit_to_timm', 'describe_file',
           'describe_non_finite',
           'find_backbone',
           'find_resume_checkpoint', 'load_checkpoint_file', 'load_densevit_state_dict',
           'non_finite_tensors', 'plan_resume', 'remove_stale_temporaries', 'temporary_path',
           'timm_to_densevit', 'WorkDirBusyError', 'WorkDirLock']
