import math

import numpy as np
import pytest
import torch

from densevit_mm.evaluation import rankme


def slow_rankme(features: np.ndarray, eps: float = 1e-7) -> float:
    # singular values as square roots of the Gram matrix's eigenvalues, the sum term by term
    eigenvalues = np.linalg.eigvalsh(features.T @ features)
    singular = [math.sqrt(max(e, 0.)) for e in eigenvalues]
    total = sum(singular)
    entropy = 0.
    for s in singular:
        p = s / total + eps
        entropy -= p * math.log(p)
    return math.exp(entropy)


def test_equals_a_slow_reference():
    features = torch.randn(300, 24, generator=torch.Generator().manual_seed(0))
    features[:, :3] *= 10  # a few strong directions
    assert rankme(features) == pytest.approx(slow_rankme(features.double().numpy()), rel=1e-6)


@pytest.mark.parametrize('k', [1, 5, 16])
def test_k_equal_directions_give_rank_k(k):
    g = torch.Generator().manual_seed(k)
    u = torch.linalg.qr(torch.randn(200, k, generator=g))[0]  # (200, k) orthonormal
    v = torch.linalg.qr(torch.randn(32, k, generator=g))[0]
    features = 7 * u @ v.T  # k equal singular values, the rest zero
    assert rankme(features) == pytest.approx(k, rel=1e-4)
    assert rankme(0.01 * features) == pytest.approx(rankme(features), rel=1e-6)


def test_isotropic_features_score_near_their_width_and_a_decaying_spectrum_lower():
    g = torch.Generator().manual_seed(0)
    isotropic = torch.randn(2000, 64, generator=g)
    scales = torch.logspace(0, -3, 64)  # 1 down to 1e-3
    assert 62 < rankme(isotropic) <= 64
    assert rankme(isotropic * scales) < 0.4 * rankme(isotropic)


def test_bad_shape_is_named():
    with pytest.raises(ValueError, match=r'\(N, C\) features, got shape \(2, 3, 4\)'):
        rankme(torch.zeros(2, 3, 4))
