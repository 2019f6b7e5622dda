"""mmdet's COCO metric, with AP 0 for a model that detects nothing."""
from typing import Dict

from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS
from mmengine.logging import MMLogger

_AP_KEYS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


@METRICS.register_module()
class ZeroAwareCocoMetric(CocoMetric):
    """``CocoMetric`` that scores a validation set without a single detection as AP 0.

    mmdet's metric logs an error and returns no metric at all there (pycocotools cannot load
    an empty result list), so a weak backbone's run would drop out of a table instead of
    scoring the zero it earned.
    """

    def compute_metrics(self, results: list) -> Dict[str, float]:
        if results and not any(len(pred['labels']) for _, pred in results):
            MMLogger.get_current_instance().warning(
                'no detection on the whole validation set (none above the score threshold): '
                'every AP is 0')
            return {f'{metric}_{key}': 0.0 for metric in self.metrics if metric != 'proposal_fast'
                    for key in _AP_KEYS}
        return super().compute_metrics(results)
