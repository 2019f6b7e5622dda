from .lambda_warmup_hook import LambdaWarmupHook

__all__ = ['LambdaWarmupHook']
