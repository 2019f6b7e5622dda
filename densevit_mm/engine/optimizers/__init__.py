from .guarded_amp_optim_wrapper import GuardedAmpOptimWrapper, bf16_supported
from .guarded_optim_wrapper import GuardedOptimWrapper

__all__ = ['GuardedAmpOptimWrapper', 'GuardedOptimWrapper', 'bf16_supported']
