"""Two-view augmentation that remembers where each view came from.

The dense loss pairs patches by feature similarity; knowing each crop's box and flip lets us
measure how often that pairing is geometrically right (see
:mod:`densevit_mm.evaluation.correspondence`).
"""
import copy
from typing import List, Union

import mmcv
import numpy as np
from mmpretrain.datasets.transforms import MultiView, RandomResizedCrop
from mmpretrain.registry import TRANSFORMS


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
class MultiViewWithGeometry(MultiView):
    """``MultiView`` that keeps each view's geometry next to its image.

    Adds ``results['view_geometry']``: float32 ``(num_views, 7)`` rows of
    ``x1, y1, x2, y2`` (the crop box in the source image), ``flipped`` (1 for a horizontal
    flip after the crop), and the view's output ``height, width``.  Each view pipeline must
    contain ``RandomResizedCropWithBox``; pass ``algorithm_keys=['view_geometry']`` to
    ``PackInputs``.  With :class:`DeferredPhotometric` in the view pipelines it also adds
    ``results['view_photometric']``: float64 ``(num_views, NUM_COLUMNS)`` rows of the drawn
    photometric parameters (pack them too).
    """

    def __init__(self, transforms: List[List[dict]], num_views: Union[int, List[int]]) -> None:
        super().__init__(transforms, num_views)
        if not all(any(t.get('type') == 'RandomResizedCropWithBox' for t in view)
                   for view in transforms):
            raise ValueError('every view pipeline of MultiViewWithGeometry needs a '
                             'RandomResizedCropWithBox (it records the crop box)')
        for view in transforms:
            names = [t.get('type') for t in view]
            if 'DeferredPhotometric' not in names:
                continue
            at = names.index('DeferredPhotometric')
            after = view[at + 1:]
            if 'RandomResizedCropWithBox' not in names[:at] or any(
                    t.get('type') != 'RandomFlip' or t.get('direction', 'horizontal')
                    != 'horizontal' for t in after):
                raise ValueError(
                    'DeferredPhotometric must come after RandomResizedCropWithBox, followed by '
                    'horizontal RandomFlips only: its ops are applied to the final view on the '
                    f'device, where only a horizontal flip commutes with them; got {names}')

    def transform(self, results: dict) -> dict:
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
        results['view_geometry'] = np.asarray(geometry, dtype=np.float32)  # (V, 7)
        if photometric:
            if len(photometric) != len(images):
                raise ValueError('DeferredPhotometric must be in every view pipeline of '
                                 'MultiViewWithGeometry or in none')
            results['view_photometric'] = np.stack(photometric)  # (V, NUM_COLUMNS)
        return results
