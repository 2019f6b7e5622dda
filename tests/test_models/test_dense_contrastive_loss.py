import math

import pytest
import torch
import torch.nn.functional as F

from densevit_mm.models.losses import DenseContrastiveLoss


def reference_dense_loss(q_dense, k_dense, q_backbone, k_backbone, queue, t):
    """DenseCL's dense term written from the formula, one location at a time, in float64."""
    q_dense, k_dense = q_dense.double(), k_dense.double()
    q_backbone, k_backbone, queue = q_backbone.double(), k_backbone.double(), queue.double()
    B, N, _ = q_dense.shape
    total = 0.
    for b in range(B):
        for i in range(N):
            cos = [F.cosine_similarity(q_backbone[b, i], k_backbone[b, j], dim=0)
                   for j in range(N)]
            c = int(torch.stack(cos).argmax())
            q = q_dense[b, i] / q_dense[b, i].norm()
            k = k_dense[b, c] / k_dense[b, c].norm()
            pos = torch.exp(q @ k / t)
            neg = torch.exp(queue @ q / t).sum()
            total = total - torch.log(pos / (pos + neg))
    return total / (B * N)


def make_inputs(B=2, N=6, D=8, C=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, N, D, generator=g, dtype=dtype),
            torch.randn(B, N, D, generator=g, dtype=dtype),
            torch.randn(B, N, C, generator=g, dtype=dtype),
            torch.randn(B, N, C, generator=g, dtype=dtype)]


@pytest.mark.parametrize('implementation', ['auto', 'chunked', 'naive'])  # fused: no float64
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_loss_equals_float64_reference(seed, implementation):
    loss_fn = DenseContrastiveLoss(queue_len=37, feat_dim=8, temperature=0.2,
                                   implementation=implementation, chunk_size=5).double()
    inputs = make_inputs(seed=seed)
    queue_before = loss_fn.queue.clone()
    expected = reference_dense_loss(*inputs, queue_before, 0.2)
    assert abs(float(loss_fn(*inputs)) - float(expected)) < 1e-6


def test_float32_loss_close_to_reference():
    loss_fn = DenseContrastiveLoss(queue_len=37, feat_dim=8, temperature=0.2)
    inputs = make_inputs(dtype=torch.float32)
    expected = reference_dense_loss(*inputs, loss_fn.queue.clone(), 0.2)
    assert abs(float(loss_fn(*inputs)) - float(expected)) < 1e-5


def test_analytic_collinear_keys_orthogonal_queue():
    # q == k at every location and every queued key orthogonal to q: l_pos = 1/t, l_neg = 0,
    # so the loss is -log(e^(1/t) / (e^(1/t) + K)) = log(1 + K e^(-1/t)).
    K, t = 16, 0.2
    loss_fn = DenseContrastiveLoss(queue_len=K, feat_dim=4, temperature=t).double()
    loss_fn.queue.zero_()
    loss_fn.queue[:, 1] = 1.  # every negative is e_1
    q = torch.zeros(2, 3, 4, dtype=torch.float64)
    q[..., 0] = 2.5  # e_0, not normalised
    backbone = torch.randn(2, 3, 5, dtype=torch.float64)
    loss = loss_fn(q, q.clone(), backbone, backbone.clone())
    assert float(loss) == pytest.approx(math.log(1 + K * math.exp(-1 / t)), abs=1e-12)


@pytest.mark.parametrize('implementation', ['chunked', 'naive'])
def test_gradient_matches_reference_and_stops_at_keys(implementation):
    loss_fn = DenseContrastiveLoss(queue_len=23, feat_dim=8, temperature=0.2,
                                   implementation=implementation, chunk_size=5).double()
    q_dense, k_dense, q_backbone, k_backbone = make_inputs(seed=3)
    q_ours = q_dense.clone().requires_grad_()
    k_ours = k_dense.clone().requires_grad_()
    q_ref = q_dense.clone().requires_grad_()
    reference_dense_loss(q_ref, k_dense, q_backbone, k_backbone, loss_fn.queue.clone(),
                         0.2).backward()
    loss_fn(q_ours, k_ours, q_backbone, k_backbone).backward()
    torch.testing.assert_close(q_ours.grad, q_ref.grad, atol=1e-10, rtol=1e-8)
    assert k_ours.grad is None
    assert not loss_fn.queue.requires_grad


def test_correspondence_recovers_a_permutation_exactly():
    B, N, C = 3, 49, 16
    feat1 = torch.randn(B, N, C)
    perm = torch.stack([torch.randperm(N) for _ in range(B)])  # (B, N)
    # feat2[b, perm[b, i]] = feat1[b, i], scaled: cosine ignores scale
    feat2 = torch.empty_like(feat1)
    for b in range(B):
        feat2[b, perm[b]] = feat1[b] * 3.
    match = DenseContrastiveLoss.extract_correspondence(feat1, feat2)
    assert match.dtype == torch.long and match.shape == (B, N)
    assert torch.equal(match, perm)


def test_negatives_are_the_queue_before_the_call_then_pooled_keys_enqueued():
    loss_fn = DenseContrastiveLoss(queue_len=10, feat_dim=8, temperature=0.2).double()
    loss_fn.queue_ptr[0] = 8
    inputs = make_inputs(B=3)
    before = loss_fn.queue.clone()
    expected = reference_dense_loss(*inputs, before, 0.2)
    assert abs(float(loss_fn(*inputs)) - float(expected)) < 1e-6
    pooled = F.normalize(inputs[1].mean(dim=1), dim=1)  # (B, D)
    # three keys written at rows 8, 9, 0; the pointer wraps to 1
    torch.testing.assert_close(loss_fn.queue[[8, 9, 0]], pooled)
    torch.testing.assert_close(loss_fn.queue[1:8], before[1:8])
    assert int(loss_fn.queue_ptr) == 1


def test_given_pooled_keys_are_what_gets_enqueued():
    loss_fn = DenseContrastiveLoss(queue_len=10, feat_dim=8).double()
    inputs = make_inputs(B=2)
    pooled = torch.randn(2, 8, dtype=torch.float64)
    loss_fn(*inputs, k_pooled=pooled)
    torch.testing.assert_close(loss_fn.queue[:2], F.normalize(pooled, dim=1))


def test_bad_shapes_are_named():
    loss_fn = DenseContrastiveLoss(queue_len=10, feat_dim=8)
    q, k, qb, kb = make_inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match=r'\(B, N, 8\)'):
        loss_fn(q[..., :4], k[..., :4], qb, kb)
    with pytest.raises(ValueError, match='q_backbone and k_backbone'):
        loss_fn(q, k, qb[:, :3], kb)
    with pytest.raises(ValueError, match='temperature must be positive'):
        DenseContrastiveLoss(temperature=0.)


def test_a_given_match_is_used_as_is():
    q_dense, k_dense, q_backbone, k_backbone = make_inputs(seed=3)
    loss_fn = DenseContrastiveLoss(queue_len=11, feat_dim=8).double()
    state = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    own = loss_fn(q_dense, k_dense, q_backbone, k_backbone)
    loss_fn.load_state_dict(state)
    match = DenseContrastiveLoss.extract_correspondence(q_backbone, k_backbone)
    assert float(loss_fn(q_dense, k_dense, q_backbone, k_backbone, match=match)) == float(own)
    loss_fn.load_state_dict(state)
    other = torch.zeros_like(match)  # every location matched to key 0: another loss
    assert float(loss_fn(q_dense, k_dense, q_backbone, k_backbone, match=other)) != float(own)
    with pytest.raises(ValueError, match=r'match must have shape \(2, 6\) \(B, N\)'):
        loss_fn(q_dense, k_dense, q_backbone, k_backbone, match=match[:, :3])
