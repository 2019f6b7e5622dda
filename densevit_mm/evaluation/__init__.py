from .correspondence import (correspondence_accuracy, hub_share, patch_centers_in_source,
                             true_correspondence)
from .dense_retrieval import (LABEL_MODES, BackboneFeatures, augmented_views,
                              build_memory_bank, evaluate_dense_retrieval, knn_search,
                              knn_search_exact, label_oracle_features, majority_labels,
                              patch_ceiling, patch_label_histograms, summarize_seeds,
                              transfer_labels, upsample_predict, segmentation_miou)
from .dense_retrieval_inputs import build_frozen_backbone, load_split, retrieval_spec
from .feature_rank import rankme

__all__ = ['correspondence_accuracy', 'hub_share', 'patch_centers_in_source', 'rankme',
           'true_correspondence', 'LABEL_MODES', 'BackboneFeatures', 'augmented_views',
           'build_memory_bank', 'build_frozen_backbone', 'evaluate_dense_retrieval',
           'knn_search', 'knn_search_exact', 'label_oracle_features', 'load_split',
           'majority_labels', 'patch_ceiling', 'patch_label_histograms', 'retrieval_spec',
           'segmentation_miou', 'summarize_seeds', 'transfer_labels', 'upsample_predict']
