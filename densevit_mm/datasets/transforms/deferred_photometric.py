"""Draw the photometric augmentation in the data workers, apply it batched on the device."""
from typing import List

import numpy as np
from mmcv.transforms import BaseTransform, RandomApply
from mmcv.transforms import RandomGrayscale
from mmpretrain.datasets.transforms import ColorJitter, GaussianBlur
from mmpretrain.registry import TRANSFORMS

from . import batched_photometric as bp
from .random_draws import DrawMethod

# each step's first random method
_DRAWS = dict(jitter='_rand_params', gray='_random_prob', blur='random_disable')
_ORDER_HELP = ('DeferredPhotometric takes, in this order and each at most once: ColorJitter '
               "(backend='pillow', optionally inside RandomApply), RandomGrayscale "
               "(keep_channels=True, color_format 'bgr' or 'rgb') and GaussianBlur -- the "
               'MoCo v2 / DenseCL augmentation')


@TRANSFORMS.register_module()
class DeferredPhotometric(BaseTransform):
    """Draws the parameters of the given photometric transforms and records them, leaving the
    image as it is, so that :class:`PhotometricDataPreprocessor` applies them batched on the
    device.

    ``transforms`` are the per-image transforms the pipeline would otherwise run, with their
    arguments unchanged.  Their own random methods draw the parameters, in the order and
    with the same calls to NumPy's and Python's generators as running them would make: with
    the same seed a view gets the same augmentation either way (bit for bit on a CPU).
    Each view's parameters go to ``results['photometric']`` (a float64 row, columns in
    :mod:`batched_photometric`); ``MultiViewWithGeometry`` stacks them into
    ``view_photometric`` -- pack it with ``PackInputs(algorithm_keys=[...,
    'view_photometric'])``.

    The photometric transforms commute with a horizontal flip (they are pointwise, or a
    mirror-symmetric blur), so the flip may stay in the worker after this transform;
    ``MultiViewWithGeometry`` allows nothing else after it.
    """

    def __init__(self, transforms: List[dict]) -> None:
        super().__init__()
        self.steps = []  # (kind, transform, probability wrapper or None)
        self.gray_weights = None  # normalised as mmcv's RandomGrayscale normalises them
        for cfg in transforms:
            t = TRANSFORMS.build(cfg) if isinstance(cfg, dict) else cfg
            wrapper = None
            if isinstance(t, RandomApply):
                inner = list(t.transforms.transforms)
                if len(inner) != 1 or not isinstance(inner[0], ColorJitter):
                    raise ValueError(f'{_ORDER_HELP}; got RandomApply of {inner}')
                wrapper, t = (t, inner[0])
            kind = self._kind(t)
            if kind == 'gray':
                self.gray_weights = np.array(t.channel_weights) / sum(t.channel_weights)
            self.steps.append((kind, t, wrapper))
        # the random methods the draw calls, per step: (kind, transform, draw, apply draw)
        self._draws = [(kind, t, DrawMethod(t, _DRAWS[kind]),
                        None if wrapper is None else DrawMethod(wrapper, 'random_apply'))
                       for kind, t, wrapper in self.steps]
        kinds = [kind for kind, _, _ in self.steps]
        ranked = [('jitter', 'gray', 'blur').index(k) for k in kinds]
        if ranked != sorted(set(ranked)):
            raise ValueError(f'{_ORDER_HELP}; got {[type(t).__name__ for _, t, _ in self.steps]}')

    @staticmethod
    def _kind(t) -> str:
        if isinstance(t, ColorJitter):
            if t.backend != 'pillow':
                raise ValueError(f"{_ORDER_HELP}; got ColorJitter(backend={t.backend!r}): the "
                                 "batched ops reproduce the 'pillow' backend only")
            return 'jitter'
        if isinstance(t, RandomGrayscale):
            weights = np.asarray(t.channel_weights, dtype=np.float64)
            if not t.keep_channels or t.color_format not in ('bgr', 'rgb') or \
                    weights.shape != (3,) or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f'{_ORDER_HELP}; got RandomGrayscale(keep_channels='
                                 f'{t.keep_channels}, color_format={t.color_format!r}, '
                                 f'channel_weights={t.channel_weights}): keep_channels=True '
                                 'and three non-negative channel_weights are needed')
            return 'gray'
        if isinstance(t, GaussianBlur):
            return 'blur'
        raise ValueError(f'{_ORDER_HELP}; {type(t).__name__} is not supported')

    def draw(self) -> np.ndarray:
        """One view's parameters: a float64 row, columns in :mod:`batched_photometric`."""
        row = [0.] + [np.nan] * (bp.NUM_COLUMNS - 1)  # a list: a worker draws per image
        row[bp.GRAY] = row[bp.BLUR] = 0.
        for kind, t, draw, applied in self._draws:
            if kind == 'jitter':
                if applied is not None and not applied():
                    continue
                order, *factors = draw()
                row[bp.JITTER], row[bp.ORDER] = 1., list(order)
                if factors[3] is not None:  # hue factor -> Pillow's 8-bit shift
                    factors[3] = int(factors[3] * 255) % 256
                row[bp.FACTORS] = [np.nan if f is None else f for f in factors]
            elif kind == 'gray':
                if draw() < t.prob:
                    row[bp.GRAY], row[bp.GRAY_WEIGHTS] = 1., list(self.gray_weights)
            elif not draw():  # blur: random_disable
                row[bp.BLUR] = 1.
                row[bp.RADIUS] = t.radius if t.radius is not None else \
                    DrawMethod(t, 'random_magnitude')()
        return np.array(row, dtype=np.float64)

    def transform(self, results: dict) -> dict:
        results['photometric'] = self.draw()
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}({[t for _, t, _ in self.steps]})'
