from .checkpoint_file import (NO_SPACE, CheckpointFileError, DiskFullError, atomic_move,
                              atomic_save, atomic_write_text, describe_file,
                              describe_non_finite, disk_full_error, load_checkpoint_file,
                              non_finite_tensors)
from .resume import ResumePlan, find_resume_checkpoint, plan_resume
from .resume_check import (ACCEPTABLE, ResumeMismatchError, check_resume, dataset_fingerprint,
                           run_record)
from .vit_checkpoint import (check_config_checkpoints, densevit_to_timm, find_backbone,
                             load_densevit_state_dict, timm_to_densevit)
from .work_dir import (WorkDirBusyError, WorkDirLock, remove_stale_temporaries,
                       temporary_path)

__all__ = [
    'ACCEPTABLE', 'CheckpointFileError', 'DiskFullError', 'NO_SPACE', 'ResumeMismatchError',
    'ResumePlan', 'WorkDirBusyError', 'WorkDirLock', 'atomic_move', 'atomic_save',
    'atomic_write_text', 'check_config_checkpoints', 'check_resume', 'dataset_fingerprint',
    'densevit_to_timm', 'describe_file', 'describe_non_finite', 'disk_full_error',
    'find_backbone', 'find_resume_checkpoint', 'load_checkpoint_file',
    'load_densevit_state_dict', 'non_finite_tensors', 'plan_resume', 'remove_stale_temporaries',
    'run_record', 'temporary_path', 'timm_to_densevit'
]
