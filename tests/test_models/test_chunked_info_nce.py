import pytest
import torch
import torch.nn.functional as F

from densevit_mm.models.losses import (DenseContrastiveLoss, GlobalContrastiveLoss,
                                       chunked_info_nce, info_nce)


def unit(*shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


@pytest.mark.parametrize('M,K,D,chunk', [(1, 1, 4, 1), (37, 100, 8, 16), (64, 1000, 16, 333),
                                         (200, 4097, 32, 1024), (50, 10, 8, 4096)])
def test_loss_and_gradients_equal_the_naive_path(M, K, D, chunk):
    q, k, n = unit(M, D, seed=0), unit(M, D, seed=1), unit(K, D, seed=2)
    q1, k1 = q.clone().requires_grad_(), k.clone().requires_grad_()
    q2, k2 = q.clone().requires_grad_(), k.clone().requires_grad_()
    naive = info_nce(q1, k1, n, 0.2)
    lean = chunked_info_nce(q2, k2, n, 0.2, chunk)
    naive.backward()
    lean.backward()
    assert abs(float(naive) - float(lean)) < 1e-5
    torch.testing.assert_close(q2.grad, q1.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(k2.grad, k1.grad, atol=1e-5, rtol=0)


def test_exact_in_float64_and_stable_at_extreme_logits():
    q, n = unit(30, 8, seed=3, dtype=torch.float64), unit(77, 8, seed=4, dtype=torch.float64)
    n[5] = q[0]  # a negative identical to a query: logit 1 / 0.01 = 100
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    naive, lean = info_nce(q1, q, n, 0.01), chunked_info_nce(q2, q, n, 0.01, 10)
    naive.backward()
    lean.backward()
    assert torch.isfinite(lean) and abs(float(naive) - float(lean)) < 1e-12
    torch.testing.assert_close(q2.grad, q1.grad, atol=1e-12, rtol=0)


def test_bf16_autocast_stays_close_and_finite():
    q, k, n = unit(128, 32, seed=5), unit(128, 32, seed=6), unit(3000, 32, seed=7)
    reference = float(info_nce(q, k, n, 0.2))
    qb = q.clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        lean = chunked_info_nce(qb, k, n, 0.2, 512)
    lean.backward()
    assert lean.dtype == torch.float32 and torch.isfinite(qb.grad).all()
    assert float(lean) == pytest.approx(reference, rel=2e-2)  # bf16 has 8 mantissa bits
    q32 = q.clone().requires_grad_()
    info_nce(q32, k, n, 0.2).backward()
    cosine = F.cosine_similarity(qb.grad.flatten(), q32.grad.flatten(), dim=0)
    assert cosine > 0.99


def test_no_gradient_reaches_the_negatives():
    q = unit(10, 8, seed=8).requires_grad_()
    n = unit(20, 8, seed=9).requires_grad_()
    chunked_info_nce(q, unit(10, 8, seed=10), n, 0.2, 7).backward()
    assert n.grad is None and q.grad is not None


@pytest.mark.parametrize('cls', [DenseContrastiveLoss, GlobalContrastiveLoss])
def test_losses_give_the_same_result_with_either_path(cls):
    lean = cls(queue_len=50, feat_dim=8, chunk_size=16)
    naive = cls(queue_len=50, feat_dim=8, chunk_size=None)
    naive.load_state_dict(lean.state_dict())
    shape = (3, 5, 8) if cls is DenseContrastiveLoss else (3, 8)
    inputs = [torch.randn(*shape), torch.randn(*shape)]
    if cls is DenseContrastiveLoss:
        inputs += [torch.randn(3, 5, 6), torch.randn(3, 5, 6)]
    a = [x.clone().requires_grad_() for x in inputs[:1]] + inputs[1:]
    b = [x.clone().requires_grad_() for x in inputs[:1]] + inputs[1:]
    loss_lean, loss_naive = lean(*a), naive(*b)
    loss_lean.backward()
    loss_naive.backward()
    assert abs(float(loss_lean) - float(loss_naive)) < 1e-5
    torch.testing.assert_close(a[0].grad, b[0].grad, atol=1e-5, rtol=0)
    assert torch.equal(lean.queue, naive.queue) and int(lean.queue_ptr) == int(naive.queue_ptr)


def test_chunk_size_is_validated():
    with pytest.raises(ValueError, match='chunk_size must be positive'):
        DenseContrastiveLoss(chunk_size=0)
    with pytest.raises(ValueError, match='chunk_size must be positive'):
        chunked_info_nce(unit(2, 4, seed=0), unit(2, 4, seed=1), unit(3, 4, seed=2), 0.2, 0)
