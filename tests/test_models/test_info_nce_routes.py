"""The routes of the InfoNCE (fused, chunked, naive) against a reference written from the
formula with autograd."""
import pytest
import torch
import torch.nn.functional as F

from densevit_mm.models.losses import (DenseContrastiveLoss, GlobalContrastiveLoss,
                                       fused_kernel_for, info_nce)
from densevit_mm.models.losses import lse_routes
from densevit_mm.models.losses.lse_routes import attention_with_lse, fused_kernel

PATHS = {'fused': lambda q, k, n, t: info_nce(q, k, n, t, 'fused'),
         'chunked 333': lambda q, k, n, t: info_nce(q, k, n, t, 'chunked', 333),
         'chunked 1': lambda q, k, n, t: info_nce(q, k, n, t, 'chunked', 1),
         'naive': lambda q, k, n, t: info_nce(q, k, n, t, 'naive')}


def reference(q, k, negatives, temperature):
    """All ``(M, 1 + K)`` logits and ``cross_entropy``; autograd gives the gradient."""
    l_pos = (q * k).sum(dim=1, keepdim=True)  # (M, 1)
    l_neg = q @ negatives.detach().t()  # (M, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (M, 1 + K)
    # The positive sits in column 0 of every row.
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def unit(*shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


@pytest.mark.parametrize('threads', [1, 2, 3])
def test_the_private_kernels_are_there_and_return_the_log_sum_exp(threads):
    # Fails loudly if a torch upgrade removes or changes the operator behind the fused route,
    # instead of the losses silently falling back to the slower chunked path.  The rows are
    # split into one head per thread, padded when they do not divide (70 rows, 3 threads).
    assert fused_kernel('cpu', torch.float32) is not None
    assert fused_kernel('cpu', torch.bfloat16) is not None
    q, keys = unit(70, 16, seed=0), unit(300, 16, seed=1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, lse = attention_with_lse(q, keys, 5., fused_kernel('cpu', torch.float32))
    finally:
        torch.set_num_threads(before)
    scores = q @ keys.t() * 5.  # (M, K)
    assert out.shape == (70, 16) and lse.shape == (70,) and lse.dtype == torch.float32
    torch.testing.assert_close(lse, torch.logsumexp(scores, dim=1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out, scores.softmax(dim=1) @ keys, atol=1e-6, rtol=0)


def test_no_query_rows_give_empty_outputs():
    out, lse = attention_with_lse(torch.zeros(0, 16), unit(30, 16, seed=1), 5.,
                                  fused_kernel('cpu', torch.float32))
    assert out.shape == (0, 16) and lse.shape == (0,)


def test_cuda_kernel_choice_follows_dtype_and_feature_size(monkeypatch):
    names = {}
    for capability in (7, 9):
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda d, c=capability: (c, 0))
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            names[capability, dtype] = fused_kernel('cuda', dtype, 128)
        names[capability, 'dim 100'] = fused_kernel('cuda', torch.float32, 100)
        names[capability, 'dim 512'] = fused_kernel('cuda', torch.bfloat16, 512)
    flash, efficient = ('aten::_scaled_dot_product_flash_attention',
                        'aten::_scaled_dot_product_efficient_attention')
    assert names == {
        (7, torch.float32): efficient, (7, torch.float16): efficient, (7, torch.bfloat16): None,
        (7, torch.float64): None, (7, 'dim 100'): None, (7, 'dim 512'): None,
        (9, torch.float32): efficient, (9, torch.float16): flash, (9, torch.bfloat16): flash,
        (9, torch.float64): None, (9, 'dim 100'): None, (9, 'dim 512'): None}


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('M,K,D', [(1, 1, 4), (37, 100, 8), (64, 1000, 16), (200, 4097, 32),
                                   (513, 2049, 128), (50, 10, 8)])
def test_loss_and_gradients_equal_the_reference(path, M, K, D):
    q, k, n = unit(M, D, seed=0), unit(M, D, seed=1), unit(K, D, seed=2)
    q1, k1 = q.clone().requires_grad_(), k.clone().requires_grad_()
    q2, k2 = q.clone().requires_grad_(), k.clone().requires_grad_()
    naive = reference(q1, k1, n, 0.2)
    routed = PATHS[path](q2, k2, n, 0.2)
    naive.backward()
    routed.backward()
    assert abs(float(naive) - float(routed)) < 1e-5
    torch.testing.assert_close(q2.grad, q1.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(k2.grad, k1.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize('implementation', ['chunked', 'naive'])
def test_exact_in_float64_and_stable_at_extreme_logits(implementation):
    q, n = unit(30, 8, seed=3, dtype=torch.float64), unit(77, 8, seed=4, dtype=torch.float64)
    n[5] = q[0]  # a negative identical to a query: logit 1 / 0.01 = 100
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    naive, routed = reference(q1, q, n, 0.01), info_nce(q2, q, n, 0.01, implementation, 10)
    naive.backward()
    routed.backward()
    assert torch.isfinite(routed) and abs(float(naive) - float(routed)) < 1e-12
    torch.testing.assert_close(q2.grad, q1.grad, atol=1e-12, rtol=0)


def test_fused_is_stable_at_extreme_logits():
    q, n = unit(30, 8, seed=3), unit(77, 8, seed=4)
    n[5] = q[0]
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    naive, fused = reference(q1, q, n, 0.01), info_nce(q2, q, n, 0.01, 'fused')
    naive.backward()
    fused.backward()
    assert torch.isfinite(fused) and float(fused) == pytest.approx(float(naive), rel=1e-5)
    torch.testing.assert_close(q2.grad, q1.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('path', PATHS)
def test_bf16_autocast_stays_close_and_finite(path):
    q, k, n = unit(128, 32, seed=5), unit(128, 32, seed=6), unit(3000, 32, seed=7)
    expected = float(reference(q, k, n, 0.2))
    qb = q.clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        routed = PATHS[path](qb, k, n, 0.2)
    routed.backward()
    assert routed.dtype == torch.float32 and qb.grad.dtype == torch.float32
    assert torch.isfinite(qb.grad).all()
    assert float(routed) == pytest.approx(expected, rel=2e-2)  # bf16 has 8 mantissa bits
    q32 = q.clone().requires_grad_()
    reference(q32, k, n, 0.2).backward()
    cosine = F.cosine_similarity(qb.grad.flatten(), q32.grad.flatten(), dim=0)
    assert cosine > 0.99


def test_fused_runs_bf16_inputs_in_bf16():
    q, k, n = unit(64, 16, seed=5), unit(64, 16, seed=6), unit(500, 16, seed=7)
    assert fused_kernel_for(q.bfloat16()) is not None
    qb = q.bfloat16().requires_grad_()
    loss = info_nce(qb, k.bfloat16(), n.bfloat16(), 0.2, 'fused')
    loss.backward()
    assert qb.grad.dtype == torch.bfloat16 and torch.isfinite(qb.grad.float()).all()
    assert float(loss) == pytest.approx(float(reference(q, k, n, 0.2)), rel=2e-2)


def test_fused_refuses_a_dtype_without_kernel():
    q = unit(4, 8, seed=0, dtype=torch.float64)
    assert fused_kernel_for(q) is None
    with pytest.raises(RuntimeError, match='no fused attention kernel serves cpu / torch.float64'):
        info_nce(q, q, unit(5, 8, seed=1, dtype=torch.float64), 0.2, 'fused')


@pytest.mark.parametrize('path', PATHS)
def test_no_gradient_reaches_the_negatives(path):
    q = unit(10, 8, seed=8).requires_grad_()
    n = unit(20, 8, seed=9).requires_grad_()
    PATHS[path](q, unit(10, 8, seed=10), n, 0.2).backward()
    assert n.grad is None and q.grad is not None


@pytest.mark.parametrize('cls', [DenseContrastiveLoss, GlobalContrastiveLoss])
@pytest.mark.parametrize('implementation', ['auto', 'fused', 'chunked'])
def test_losses_give_the_same_result_with_every_implementation(cls, implementation):
    routed = cls(queue_len=50, feat_dim=8, implementation=implementation, chunk_size=16)
    naive = cls(queue_len=50, feat_dim=8, implementation='naive')
    naive.load_state_dict(routed.state_dict())
    shape = (3, 5, 8) if cls is DenseContrastiveLoss else (3, 8)
    inputs = [torch.randn(*shape), torch.randn(*shape)]
    if cls is DenseContrastiveLoss:
        inputs += [torch.randn(3, 5, 6), torch.randn(3, 5, 6)]
    a = [x.clone().requires_grad_() for x in inputs[:1]] + inputs[1:]
    b = [x.clone().requires_grad_() for x in inputs[:1]] + inputs[1:]
    loss_routed, loss_naive = routed(*a), naive(*b)
    loss_routed.backward()
    loss_naive.backward()
    assert abs(float(loss_routed) - float(loss_naive)) < 1e-5
    torch.testing.assert_close(a[0].grad, b[0].grad, atol=1e-5, rtol=0)
    assert torch.equal(routed.queue, naive.queue) and int(routed.queue_ptr) == int(naive.queue_ptr)


def test_options_are_validated():
    with pytest.raises(ValueError, match='chunk_size must be positive'):
        DenseContrastiveLoss(chunk_size=0)
    with pytest.raises(ValueError, match="implementation must be one of .*got 'flash'"):
        GlobalContrastiveLoss(implementation='flash')
    with pytest.raises(ValueError, match='chunk_size must be positive'):
        info_nce(unit(2, 4, seed=0), unit(2, 4, seed=1), unit(3, 4, seed=2), 0.2, 'chunked', 0)


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_kernels_equal_the_reference(dtype):
    q, k, n = (unit(*s, seed=i).cuda() for i, s in enumerate([(1000, 128), (1000, 128),
                                                               (4099, 128)]))
    assert fused_kernel_for(q.to(dtype)) is not None
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    naive = reference(q1, k, n, 0.2)
    with torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32):
        fused = info_nce(q2, k, n, 0.2, 'fused')
    naive.backward()
    fused.backward()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.isfinite(fused) and float(fused) == pytest.approx(float(naive), rel=tol)
    cosine = F.cosine_similarity(q1.grad.flatten(), q2.grad.flatten(), dim=0)
    assert cosine > (1 - 1e-6 if dtype == torch.float32 else 0.99)


@pytest.fixture
def fresh_kernel_checks():
    """Each fused kernel checks itself once per process: let this test see it happen."""
    lse_routes.proven_fused_kernel.cache_clear()
    yield lse_routes.proven_fused_kernel
    lse_routes.proven_fused_kernel.cache_clear()


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_a_working_kernel_passes_its_check_once(fresh_kernel_checks, mm_log, dtype):
    kernel = fused_kernel('cpu', dtype, 32)
    assert fresh_kernel_checks('cpu', dtype, 32) == kernel
    q = unit(5, 32, seed=0, dtype=dtype)
    assert fused_kernel_for(q) == kernel and fused_kernel_for(q) == kernel
    checked = [m for level, m in mm_log if 'InfoNCE' in m]
    assert checked == [f'InfoNCE: fused kernel {kernel} checked for cpu / {dtype} / dim 32']


@pytest.mark.parametrize('failure', ['raises', 'wrong log-sum-exp'])
def test_a_failing_kernel_steps_aside_for_the_chunked_path(fresh_kernel_checks, monkeypatch,
                                                           mm_log, failure):
    """A kernel this build or GPU lacks, or one that computes a wrong log-sum-exp: 'auto'
    takes the chunked path with one warning naming the reason; 'fused' refuses."""
    working = lse_routes.attention_with_lse

    def broken(q, keys, scale, kernel):
        if failure == 'raises':
            raise RuntimeError('no kernel image is available for execution on the device')
        out, lse = working(q, keys, scale, kernel)
        return out, lse + 0.05
    monkeypatch.setattr(lse_routes, 'attention_with_lse', broken)
    auto = DenseContrastiveLoss(queue_len=50, feat_dim=8, implementation='auto')
    chunked = DenseContrastiveLoss(queue_len=50, feat_dim=8, implementation='chunked')
    chunked.load_state_dict(auto.state_dict())
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # the second call meets the cached verdict: no second warning
        inputs = [torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g),
                  torch.randn(3, 5, 6, generator=g), torch.randn(3, 5, 6, generator=g)]
        a, b = inputs[0].clone().requires_grad_(), inputs[0].clone().requires_grad_()
        loss_auto, loss_chunked = auto(a, *inputs[1:]), chunked(b, *inputs[1:])
        (loss_auto + loss_chunked).backward()
        assert torch.equal(loss_auto, loss_chunked) and torch.equal(a.grad, b.grad)
    warnings = [m for level, m in mm_log if level == 'WARNING']
    reason = ('RuntimeError: no kernel image is available' if failure == 'raises' else
              'log-sum-exp off by 0.05')
    assert len(warnings) == 1
    assert warnings[0].startswith('InfoNCE: the fused kernel aten::_scaled_dot_product_flash_'
                                  'attention_for_cpu failed its check on cpu / torch.float32 / '
                                  'dim 8 (') and reason in warnings[0]
    assert 'the losses take the chunked path' in warnings[0]
    with pytest.raises(RuntimeError, match='or it failed its check'):
        info_nce(unit(4, 8, seed=0), unit(4, 8, seed=1), unit(9, 8, seed=2), 0.2, 'fused')
