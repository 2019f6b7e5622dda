"""Two-view augmentation that remembers where each view came from.

The dense loss pairs patches by feature similarity; knowing each crop's box and flip lets us
measure how often that pairing is geometrically right (see
:mod:`densevit_mm.evaluation.correspondence`).
"""
import copy
from typing import List, Union

import mmcv
import numpy as np
import torch
from mmpretrain.datasets.transforms import MultiView, RandomResizedCrop
from mmpretrain.registry import TRANSFORMS

from .deferred_photometric import DeferredPhotometric
from .random_draws import DrawMethod

# the view pipelines whose views the device makes (DeviceAugmentDataPreprocessor)
_DEFERRED_VIEWS = [['DeferredResizedCrop', *photometric, *flip]
                   for photometric in ([], ['DeferredPhotometric'])
                   for flip in ([], ['RandomFlip'])]


@TRANSFORMS.register_module()
class RandomResizedCropWithBox(RandomResizedCrop):
    """mmpretrain's ``RandomResizedCrop`` that also stores the crop box.

    Adds ``results['crop_box'] = (x1, y1, x2, y2)``: the crop in pixel edges of the image it
    was cut from (``x2 = x1 + width``), and ``results['source_shape'] = (h, w)``.
    """

    def transform(self, results: dict) -> dict:
        img = results['img']
        top, left, height, width = self.rand_crop_params(img)
        img = mmcv.imcrop(img, bboxes=np.array([left, top, left + width - 1, top + height - 1]))
        results['source_shape'] = results['img'].shape[:2]
        results['img'] = mmcv.imresize(img, tuple(self.scale[::-1]),
                                       interpolation=self.interpolation, backend=self.backend)
        results['img_shape'] = results['img'].shape
        results['crop_box'] = (left, top, left + width, top + height)
        return results


@TRANSFORMS.register_module()
class DeferredResizedCrop(RandomResizedCropWithBox):
    """``RandomResizedCropWithBox`` that only draws the crop: the box is recorded as there,
    the pixels stay the decoded image's, and ``DeviceAugmentDataPreprocessor`` cuts and
    resizes every view of a batch on the device, equal to Pillow's bilinear resize bit for
    bit (:mod:`batched_resized_crop`).  Same arguments and same random draws as
    ``RandomResizedCrop``; ``backend='pillow'`` and ``interpolation='bilinear'`` are the
    resize it reproduces.  Used inside :class:`MultiViewWithGeometry`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.backend != 'pillow' or self.interpolation != 'bilinear':
            raise ValueError(
                "DeferredResizedCrop reproduces RandomResizedCrop(backend='pillow', "
                f"interpolation='bilinear') on the device; got backend={self.backend!r}, "
                f'interpolation={self.interpolation!r}. Use RandomResizedCropWithBox for '
                'another resize.')

    def transform(self, results: dict) -> dict:
        top, left, height, width = self.rand_crop_params(results['img'])
        results['source_shape'] = results['img'].shape[:2]
        results['img_shape'] = tuple(self.scale)  # (h, w)
        results['crop_box'] = (left, top, left + width, top + height)
        return results


@TRANSFORMS.register_module()
class MultiViewWithGeometry(MultiView):
    """``MultiView`` that keeps each view's geometry next to its image.

    Adds ``results['view_geometry']``: float32 ``(num_views, 7)`` rows of
    ``x1, y1, x2, y2`` (the crop box in the source image), ``flipped`` (1 for a horizontal
    flip after the crop), and the view's output ``height, width``.  Each view pipeline must
    contain ``RandomResizedCropWithBox``; pass ``algorithm_keys=['view_geometry']`` to
    ``PackInputs``.  With :class:`DeferredPhotometric` in the view pipelines it also adds
    ``results['view_photometric']``: float64 ``(num_views, NUM_COLUMNS)`` rows of the drawn
    photometric parameters (pack them too).

    With :class:`DeferredResizedCrop` instead of ``RandomResizedCropWithBox`` (in every view
    pipeline, followed only by ``DeferredPhotometric`` and horizontal ``RandomFlip``), no view
    is made here: the draws are the same, ``view_geometry`` holds the boxes and flips, and
    ``results['img']`` stays the decoded image, as an ``(H, W, 3)`` uint8 tensor that
    ``PackInputs`` passes on unchanged; collate with ``collate_source_images`` and train with
    ``DeviceAugmentDataPreprocessor``, which makes the views.
    """

    def __init__(self, transforms: List[List[dict]], num_views: Union[int, List[int]]) -> None:
        super().__init__(transforms, num_views)
        # type names without a registry scope ('mmpretrain.RandomFlip' is a RandomFlip)
        names = [[str(t.get('type')).rsplit('.', 1)[-1] for t in view] for view in transforms]
        crops = [[n for n in view if n in ('RandomResizedCropWithBox', 'DeferredResizedCrop')]
                 for view in names]
        if not all(len(c) == 1 for c in crops):
            raise ValueError('every view pipeline of MultiViewWithGeometry needs one '
                             'RandomResizedCropWithBox or DeferredResizedCrop (it records the '
                             f'crop box); got {names}')
        kinds = {c[0] for c in crops}
        if len(kinds) > 1:
            raise ValueError('DeferredResizedCrop must be in every view pipeline of '
                             'MultiViewWithGeometry or in none: the views are made either on '
                             f'the device or here; got {names}')
        self.deferred = kinds == {'DeferredResizedCrop'}
        for view, view_names in zip(transforms, names):
            horizontal = all(t.get('direction', 'horizontal') == 'horizontal'
                             for t, n in zip(view, view_names) if n == 'RandomFlip')
            if self.deferred and (view_names not in _DEFERRED_VIEWS or not horizontal):
                raise ValueError(
                    'a view pipeline with DeferredResizedCrop must start with it and go on '
                    'with DeferredPhotometric and one horizontal RandomFlip at most (what the '
                    f'device applies after the crop); got {view_names}')
            if 'DeferredPhotometric' not in view_names:
                continue
            at = view_names.index('DeferredPhotometric')
            if crops[0][0] not in view_names[:at] or not horizontal or any(
                    n != 'RandomFlip' for n in view_names[at + 1:]):
                raise ValueError(
                    f'DeferredPhotometric must come after {crops[0][0]}, followed by '
                    'horizontal RandomFlips only: its ops are applied to the final view on the '
                    f'device, where only a horizontal flip commutes with them; got {view_names}')
        # deferred: per view, the crop's output size, its draw, the later draws (photometric,
        # flip)
        self._view_draws = [
            (view.transforms[0].scale, DrawMethod(view.transforms[0], 'rand_crop_params'),
             [t if isinstance(t, DeferredPhotometric) else DrawMethod(t, '_choose_direction')
              for t in view.transforms[1:]]) for view in self.transforms] \
            if self.deferred else []

    def transform(self, results: dict) -> dict:
        if self.deferred:
            img = results['img']
            if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
                    and img.shape[2] == 3):
                kind = f'{img.dtype} {img.shape}' if isinstance(img, np.ndarray) else type(img)
                raise ValueError(
                    'views made on the device start from decoded (H, W, 3) uint8 images; '
                    f"{results.get('img_path', 'the image')} is {kind}: load it with "
                    "LoadImageFromFile(color_type='color', to_float32=False), the default")
            geometry, photometric = self._draw_views(img)
            # left as decoded; PackInputs passes a tensor on unchanged
            results['img'] = torch.from_numpy(np.ascontiguousarray(results['img']))
        else:
            geometry, photometric = self._make_views(results)
        results['view_geometry'] = np.asarray(geometry, dtype=np.float32)  # (V, 7)
        if photometric:
            if len(photometric) != len(geometry):
                raise ValueError('DeferredPhotometric must be in every view pipeline of '
                                 'MultiViewWithGeometry or in none')
            results['view_photometric'] = np.stack(photometric)  # (V, NUM_COLUMNS)
        return results

    def _make_views(self, results: dict) -> tuple:
        """Run each view pipeline; ``results['img']`` becomes the list of views.  Returns
        the geometry rows and the photometric rows."""
        images, geometry, photometric = [], [], []
        for view in self.transforms:
            out = view(copy.deepcopy(results))
            if out.get('flip', False) and out.get('flip_direction') != 'horizontal':
                raise ValueError('MultiViewWithGeometry supports horizontal flips only, got '
                                 f"{out.get('flip_direction')!r}")
            images.append(out['img'])
            geometry.append([*out['crop_box'], float(out.get('flip', False)),
                             *out['img'].shape[:2]])
            if 'photometric' in out:
                photometric.append(out['photometric'])
        results['img'] = images
        return geometry, photometric

    def _draw_views(self, img: np.ndarray) -> tuple:
        """Deferred views: each view's geometry row and photometric row, drawn with the calls
        its transforms would make on the image, in their order, and nothing else (the
        device makes the pixels)."""
        geometry, photometric = [], []
        for size, crop, draws in self._view_draws:
            top, left, height, width = crop(img)
            flipped = False
            for draw in draws:
                if isinstance(draw, DeferredPhotometric):
                    photometric.append(draw.draw())
                else:  # RandomFlip, horizontal: its own draw
                    flipped = draw() is not None
            geometry.append([left, top, left + width, top + height, float(flipped), *size])
        return geometry, photometric
