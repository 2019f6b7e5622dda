"""Training-free dense nearest-neighbour retrieval (Balazevic et al., NeurIPS 2023, "Towards
In-Context Scene Understanding"; the open implementation is github.com/vpariza/open-hummingbird-eval).

A memory bank holds the frozen patch features of the labelled training images, seen in several
augmented passes, each with its patch's label histogram (the share of each class among the
patch's labelled pixels).  Every validation patch takes its ``k`` nearest bank patches (cosine
similarity, exact search) and averages their histograms with the weights
``softmax(similarity / temperature)``; the per-patch class scores are upsampled bilinearly to
the label resolution, their argmax is the prediction, scored with mmseg's mIoU.  Nothing is
trained, so the result is a function of the bank alone: its randomness is the seed of the
augmentation and of the optional subsampling of the bank.

A *feature function* ``fn(images, labels) -> (B, N, C)`` gives the patch features of a batch of
normalised ``(B, 3, S, S)`` images: :class:`BackboneFeatures` for a backbone (it ignores the
labels), :func:`label_oracle_features` for a perfect-feature oracle (it reads them).
"""
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# (image (3, H, W) float in the backbone's input scale, label (H, W) long)
Sample = Tuple[torch.Tensor, torch.Tensor]
FeatureFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SearchFn = Callable[[torch.Tensor, torch.Tensor, int], Tuple[torch.Tensor, torch.Tensor]]
LABEL_MODES = ('histogram', 'majority')


def patch_label_histograms(labels: torch.Tensor, patch_size: int, num_classes: int,
                           ignore_index: int = 255) -> torch.Tensor:
    """Share of each class among the labelled pixels of every patch.

    Args:
        labels (Tensor): ``(B, H, W)`` long, values in ``[0, num_classes)`` or
            ``ignore_index``; ``H`` and ``W`` multiples of ``patch_size``.

    Returns:
        Tensor: ``(B, N, num_classes)`` float, ``N = (H / p) * (W / p)`` in row-major patch
        order; each row sums to 1, or is all zero for a patch without a labelled pixel.
    """
    b, h, w = labels.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f'label size {h}x{w} is not a multiple of the patch size {patch_size}')
    valid = labels != ignore_index
    if ((labels[valid] < 0) | (labels[valid] >= num_classes)).any():
        raise ValueError(f'labels outside [0, {num_classes}) that are not the ignore index '
                         f'{ignore_index}: {sorted(labels[valid].unique().tolist())}')
    onehot = F.one_hot(labels.where(valid, 0), num_classes) * valid[..., None]  # (B, H, W, K)
    counts = F.avg_pool2d(onehot.permute(0, 3, 1, 2).float(), patch_size) * patch_size ** 2
    counts = counts.flatten(2).transpose(1, 2)  # (B, N, K) pixel counts
    total = counts.sum(-1, keepdim=True)
    return torch.where(total > 0, counts / total.clamp(min=1), counts)


def majority_labels(histograms: torch.Tensor) -> torch.Tensor:
    """``(..., K)`` histograms -> the same shape, one-hot of each row's largest class (all
    zero rows stay zero)."""
    onehot = F.one_hot(histograms.argmax(-1), histograms.shape[-1]).to(histograms.dtype)
    return onehot * (histograms.sum(-1, keepdim=True) > 0)


class BackboneFeatures:
    """Patch features of chosen layers of a frozen backbone, concatenated along channels.

    Args:
        backbone (nn.Module): returns a tuple of ``(B, C, h, w)`` maps, one per layer of
            ``out_indices`` (DenseViT with ``out_type='featmap'``).
        layers (Sequence[int]): positions in that tuple (negative counts from the end).
    """

    def __init__(self, backbone: torch.nn.Module, layers: Sequence[int]):
        self.backbone = backbone.eval()
        self.layers = list(layers)
        if not self.layers:
            raise ValueError('layers must name at least one backbone output')

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        outs = self.backbone(images)
        try:
            maps = [outs[i] for i in self.layers]
        except IndexError:
            raise ValueError(f'layers {self.layers} are not all among the backbone\'s '
                             f'{len(outs)} outputs') from None
        feats = torch.cat(maps, dim=1)  # (B, C * len(layers), h, w)
        return feats.flatten(2).transpose(1, 2)  # (B, N, C')


def label_oracle_features(patch_size: int, num_classes: int, ignore_index: int = 255
                          ) -> FeatureFn:
    """Perfect features: the one-hot of each patch's majority label (zero without labels)."""

    def features(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return majority_labels(patch_label_histograms(labels, patch_size, num_classes,
                                                      ignore_index))  # (B, N, K)
    return features


def resize_sample(image: torch.Tensor, label: torch.Tensor, size: int,
                  box: Optional[Tuple[int, int, int, int]] = None, flip: bool = False
                  ) -> Sample:
    """Crop ``box = (top, left, height, width)`` (default: all), resize to ``size`` x ``size``
    (image bilinear, label nearest) and optionally flip left-right."""
    if box is not None:
        top, left, bh, bw = box
        image, label = image[:, top:top + bh, left:left + bw], label[top:top + bh, left:left + bw]
    image = F.interpolate(image[None].float(), (size, size), mode='bilinear',
                          align_corners=False)[0]  # (3, S, S)
    label = F.interpolate(label[None, None].float(), (size, size), mode='nearest')[0, 0].long()
    if flip:
        image, label = image.flip(-1), label.flip(-1)
    return image, label


def random_box(height: int, width: int, generator: torch.Generator,
               scale: Tuple[float, float] = (0.5, 1.0),
               ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> Tuple[int, int, int, int]:
    """A random-resized-crop box ``(top, left, height, width)``: area share in ``scale``,
    aspect ratio in ``ratio`` (log-uniform), clipped to the image."""
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[0])
    aspect = float(np.exp(np.log(ratio[0]) + (np.log(ratio[1]) - np.log(ratio[0])) * u[1]))
    bw = min(width, max(1, round((area * aspect) ** 0.5)))
    bh = min(height, max(1, round((area / aspect) ** 0.5)))
    return int(u[2] * (height - bh + 1)), int(u[3] * (width - bw + 1)), bh, bw


def augmented_views(samples: Sequence[Sample], passes: int, size: int,
                    generator: torch.Generator, augment: bool = True, batch_size: int = 32
                    ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(images (B, 3, S, S), labels (B, S, S))`` of ``passes`` passes over the
    samples: random resized crop (area 0.5-1) and flip when ``augment``, else the whole image
    each pass."""
    views = []
    for _ in range(passes):
        for image, label in samples:
            if augment:
                box = random_box(*label.shape, generator)
                flip = bool(torch.rand(1, generator=generator) < 0.5)
                views.append(resize_sample(image, label, size, box, flip))
            else:
                views.append(resize_sample(image, label, size))
            if len(views) == batch_size:
                yield torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])
                views = []
    if views:
        yield torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])


def build_memory_bank(feature_fn: FeatureFn, views, patch_size: int, num_classes: int,
                      generator: torch.Generator, bank_size: Optional[int] = None,
                      label_mode: str = 'histogram', ignore_index: int = 255
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Features and label histograms of every labelled patch of ``views``.

    Patches without a labelled pixel are left out; with ``bank_size``, a random subset of that
    many patches is kept (drawn with ``generator``), as the reference implementation does.

    Returns:
        tuple: ``(M, C)`` float32 L2-normalised features and ``(M, K)`` histograms (one-hot of
        the majority class with ``label_mode='majority'``).
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f'label_mode must be one of {LABEL_MODES}, got {label_mode!r}')
    feats, hists = [], []
    for images, labels in views:
        hist = patch_label_histograms(labels, patch_size, num_classes, ignore_index)  # (B,N,K)
        feat = feature_fn(images, labels)  # (B, N, C)
        if feat.shape[:2] != hist.shape[:2]:
            raise ValueError(f'features of shape {tuple(feat.shape)} do not match the '
                             f'{hist.shape[1]} patches of {patch_size}-pixel patches')
        keep = hist.sum(-1) > 0  # (B, N)
        feats.append(feat[keep].float())
        hists.append(hist[keep])
    feats, hists = torch.cat(feats), torch.cat(hists)  # (M, C), (M, K)
    if bank_size is not None and bank_size < len(feats):
        pick = torch.randperm(len(feats), generator=generator)[:bank_size]
        feats, hists = feats[pick], hists[pick]
    if label_mode == 'majority':
        hists = majority_labels(hists)
    return F.normalize(feats, dim=-1).contiguous(), hists


def knn_search(bank: torch.Tensor, queries: torch.Tensor, k: int
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine ``k``-NN with faiss (``IndexFlatIP`` on L2-normalised float32 rows).

    Returns:
        tuple: ``(Q, k)`` similarities (descending) and ``(Q, k)`` long bank indices.
    """
    # imported here: every training process imports this package, and faiss brings an
    # OpenMP runtime of its own besides torch's
    import faiss
    _check_k(bank, k)
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(F.normalize(bank.float(), dim=-1).numpy())
    sims, idx = index.search(F.normalize(queries.float(), dim=-1).numpy(), k)
    return torch.from_numpy(sims), torch.from_numpy(idx).long()


def knn_search_exact(bank: torch.Tensor, queries: torch.Tensor, k: int
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The reference for :func:`knn_search`: the full ``(Q, M)`` cosine matrix and its top-k."""
    _check_k(bank, k)
    sims = F.normalize(queries.float(), dim=-1) @ F.normalize(bank.float(), dim=-1).T  # (Q, M)
    return sims.topk(k, dim=1)


def _check_k(bank: torch.Tensor, k: int) -> None:
    if not 1 <= k <= len(bank):
        raise ValueError(f'k = {k} neighbours asked of a memory bank of {len(bank)} patches: '
                         'use 1 <= k <= the bank size (more passes or a larger bank_size)')


def transfer_labels(sims: torch.Tensor, idx: torch.Tensor, bank_labels: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """``(Q, k)`` similarities and indices, ``(M, K)`` bank histograms -> ``(Q, K)`` scores:
    the neighbours' histograms weighted by ``softmax(sims / temperature)``."""
    weights = torch.softmax(sims / temperature, dim=1)  # (Q, k)
    return torch.einsum('qk,qkc->qc', weights, bank_labels[idx])  # (Q, K)


def upsample_predict(scores: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``(h, w, K)`` patch scores -> ``(H, W)`` long argmax of the bilinear upsampling."""
    up = F.interpolate(scores.permute(2, 0, 1)[None], size, mode='bilinear',
                       align_corners=False)  # (1, K, H, W)
    return up[0].argmax(0)


def segmentation_miou(preds: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
                      num_classes: int, ignore_index: int = 255) -> Dict:
    """mmseg's mIoU (``IoUMetric``'s own area sums) over pairs of ``(H, W)`` maps.

    Returns:
        dict: ``mIoU`` (percent, mean over classes present in prediction or label) and
        ``per_class_iou`` (percent, NaN for a class absent from both).
    """
    from mmseg.evaluation.metrics import IoUMetric
    areas = [IoUMetric.intersect_and_union(p, l, num_classes, ignore_index)
             for p, l in zip(preds, labels)]
    totals = [torch.stack([a[j] for a in areas]).sum(0) for j in range(4)]  # 4 x (K,)
    iou = IoUMetric.total_area_to_metrics(*totals, metrics=['mIoU'])['IoU']  # (K,)
    return dict(mIoU=float(np.nanmean(iou) * 100), per_class_iou=(iou * 100).tolist())


def _val_patch_scores(feature_fn, val_samples, size, patch_size, bank, bank_labels, k,
                      temperature, search, batch_size):
    """Yield ``(scores (h, w, K), label (H, W))`` for every validation image."""
    grid = size // patch_size
    for start in range(0, len(val_samples), batch_size):
        chunk = val_samples[start:start + batch_size]
        views = [resize_sample(img, lab, size) for img, lab in chunk]
        images, labels = torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])
        feats = feature_fn(images, labels)  # (B, N, C)
        sims, idx = search(bank, feats.flatten(0, 1).float(), k)  # (B*N, k) each
        scores = transfer_labels(sims, idx, bank_labels, temperature)  # (B*N, K)
        for scores_i, (_, label) in zip(scores.view(len(chunk), grid, grid, -1), chunk):
            yield scores_i, label


def evaluate_dense_retrieval(feature_fn: FeatureFn, train_samples: Sequence[Sample],
                             val_samples: Sequence[Sample], num_classes: int, patch_size: int,
                             seed: int, input_size: int = 128, passes: int = 10, k: int = 30,
                             temperature: float = 0.02, bank_size: Optional[int] = None,
                             augment: bool = True, label_mode: str = 'histogram',
                             ignore_index: int = 255, search: SearchFn = knn_search,
                             batch_size: int = 32) -> Dict:
    """One seed of the protocol: bank, search, label transfer, upsampling, mIoU.

    Validation images are resized to ``input_size`` (square, no augmentation); the scores go
    back to each label's own resolution.  ``seed`` draws the augmentation and the bank subset.

    Returns:
        dict: ``mIoU``, ``per_class_iou`` and ``bank_patches`` (the bank's size).
    """
    if input_size % patch_size:
        raise ValueError(f'input_size {input_size} is not a multiple of the patch size '
                         f'{patch_size}')
    if temperature <= 0:
        raise ValueError(f'temperature must be positive, got {temperature}')
    generator = torch.Generator().manual_seed(seed)
    views = augmented_views(train_samples, passes, input_size, generator, augment, batch_size)
    bank, bank_labels = build_memory_bank(feature_fn, views, patch_size, num_classes,
                                          generator, bank_size, label_mode, ignore_index)
    _check_k(bank, k)
    preds, labels = [], []
    for scores, label in _val_patch_scores(feature_fn, val_samples, input_size, patch_size,
                                           bank, bank_labels, k, temperature, search,
                                           batch_size):
        preds.append(upsample_predict(scores, tuple(label.shape)))
        labels.append(label)
    result = segmentation_miou(preds, labels, num_classes, ignore_index)
    return dict(result, bank_patches=len(bank))


def patch_ceiling(val_samples: Sequence[Sample], num_classes: int, patch_size: int,
                  input_size: int = 128, label_mode: str = 'histogram',
                  ignore_index: int = 255) -> Dict:
    """The mIoU of a perfect patch classifier: each validation patch scored with its TRUE
    histogram (or majority one-hot), upsampled as the protocol does -- a bound on any method
    that predicts one score vector per patch at this input size."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f'label_mode must be one of {LABEL_MODES}, got {label_mode!r}')
    grid = input_size // patch_size
    preds, labels = [], []
    for image, label in val_samples:
        _, small = resize_sample(image, label, input_size)
        hist = patch_label_histograms(small[None], patch_size, num_classes, ignore_index)[0]
        if label_mode == 'majority':
            hist = majority_labels(hist)
        preds.append(upsample_predict(hist.view(grid, grid, -1), tuple(label.shape)))
        labels.append(label)
    return segmentation_miou(preds, labels, num_classes, ignore_index)


def summarize_seeds(results: List[Dict]) -> Dict:
    """Mean and sample standard deviation (ddof 1; 0 for one seed) of the seeds' mIoU, and
    the per-class IoU averaged over seeds."""
    mious = np.array([r['mIoU'] for r in results])
    per_class = np.nanmean(np.array([r['per_class_iou'] for r in results], dtype=float), 0)
    return dict(mIoU_mean=float(mious.mean()),
                mIoU_std=float(mious.std(ddof=1)) if len(mious) > 1 else 0.0,
                per_class_iou=per_class.tolist())
