"""RankMe (Garrido et al., ICML 2023): the effective rank of a set of embeddings, a label-free
sign of collapse.  A representation whose variance sits in a few directions scores near that
number; an isotropic one near its width."""
import torch


def rankme(features: torch.Tensor, eps: float = 1e-7) -> float:
    """``exp`` of the entropy of the normalised singular values of ``features``.

    Args:
        features (Tensor): ``(N, C)`` embeddings, one per row (here: patch tokens of many
            images); not centred, as in the paper.
        eps (float): Added to each normalised singular value before the log.

    Returns:
        float: between 1 and ``min(N, C)``.
    """
    if features.dim() != 2 or min(features.shape) < 1:
        raise ValueError(f'rankme expects (N, C) features, got shape {tuple(features.shape)}')
    singular = torch.linalg.svdvals(features.double())
    p = singular / singular.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))
