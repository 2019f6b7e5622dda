from .resumable_sampler import ResumableSampler, draw_seeds

__all__ = ['ResumableSampler', 'draw_seeds']
