"""The routes to what the InfoNCE needs from the queue, and the one place a route is chosen.

For queries ``q`` ``(M, D)`` and a queue ``n`` ``(K, D)``, every route returns
``lse_i = LSE_j(q_i . n_j * scale)`` ``(M,)`` and, when asked, the softmax-weighted queue
``weighted_i = sum_j softmax_j(q_i . n_j * scale) n_j`` ``(M, D)``, both in at least float32.
Every route has the signature ``(q, negatives, scale, need_weighted) -> (lse, weighted)``:

- :func:`fused_lse`: PyTorch's fused attention kernel with the queue as keys and values; the
  fastest where one serves the device and dtype.  The public ``scaled_dot_product_attention``
  does not return the log-sum-exp, so :func:`attention_with_lse` calls the private ``aten``
  operators behind it: the only private API the project uses, here alone;
  ``tests/test_models/test_info_nce_routes.py`` fails if a torch upgrade removes or changes them;
- :func:`chunked_lse`: chunk by chunk with an online maximum, in plain matmuls; the fallback
  everywhere else (it takes one tuning keyword, ``chunk_size``);
- :func:`naive_lse`: all ``(M, K)`` scores at once; the simplest, for comparison.

:func:`queue_softmax` chooses among them.  A fused kernel proves itself on first use per
device type, dtype and feature size (:func:`proven_fused_kernel`).
"""
import functools
import logging
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

IMPLEMENTATIONS = ('auto', 'fused', 'chunked', 'naive')

_FLASH_CPU = 'aten::_scaled_dot_product_flash_attention_for_cpu'
_FLASH_CUDA = 'aten::_scaled_dot_product_flash_attention'
_EFFICIENT_CUDA = 'aten::_scaled_dot_product_efficient_attention'

LseAndWeighted = Tuple[torch.Tensor, Optional[torch.Tensor]]


def check_route(implementation: str, chunk_size: int) -> None:
    """Raise ``ValueError`` for an implementation or chunk size no route accepts."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, '
                         f'got {implementation!r}')
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be positive, got {chunk_size}')


def _accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """At least float32, even when the matmuls run in bf16 / fp16 (inputs or autocast)."""
    return torch.promote_types(x.dtype, torch.float32)


def queue_softmax(q: torch.Tensor, negatives: torch.Tensor, scale: float, need_weighted: bool,
                  implementation: str = 'auto', chunk_size: int = 2048) -> LseAndWeighted:
    """``lse`` and ``weighted`` by the route ``implementation`` names; ``'auto'``: fused where a
    proven kernel serves ``q``, else chunked.  ``'fused'`` raises where none does."""
    check_route(implementation, chunk_size)
    if implementation == 'auto':
        implementation = 'fused' if fused_kernel_for(q) is not None else 'chunked'
    if implementation == 'fused':
        return fused_lse(q, negatives, scale, need_weighted)
    if implementation == 'chunked':
        return chunked_lse(q, negatives, scale, need_weighted, chunk_size)
    return naive_lse(q, negatives, scale, need_weighted)


def naive_lse(q: torch.Tensor, negatives: torch.Tensor, scale: float,
              need_weighted: bool) -> LseAndWeighted:
    logits = (q @ negatives.t()).to(_accumulation_dtype(q)) * scale  # (M, K)
    lse = torch.logsumexp(logits, dim=1)  # (M,)
    if not need_weighted:
        return lse, None
    probs = torch.exp(logits - lse[:, None])  # (M, K)
    return lse, (probs @ negatives.to(probs.dtype)).to(probs.dtype)  # (M, D)


def chunked_lse(q: torch.Tensor, negatives: torch.Tensor, scale: float, need_weighted: bool,
                chunk_size: int = 2048) -> LseAndWeighted:
    acc = _accumulation_dtype(q)
    running_max = q.new_full((q.shape[0],), float('-inf'), dtype=acc)  # (M,)
    running_sum = q.new_zeros(q.shape[0], dtype=acc)  # (M,): sum_j exp(logit_ij - max)
    weighted = q.new_zeros(q.shape, dtype=acc) if need_weighted else None  # (M, D)
    for start in range(0, negatives.shape[0], chunk_size):
        rows = negatives[start:start + chunk_size]  # (c, D)
        logits = (q @ rows.t()).to(acc) * scale  # (M, c)
        new_max = torch.maximum(running_max, logits.max(dim=1).values)
        rescale = torch.exp(running_max - new_max)  # (M,)
        probs = torch.exp(logits - new_max[:, None])  # (M, c), unnormalised
        running_sum = running_sum * rescale + probs.sum(dim=1)
        if need_weighted:  # sum_j exp(logit_ij - max) n_j, rescaled like the sum
            weighted = weighted * rescale[:, None] + (probs.to(rows.dtype) @ rows).to(acc)
        running_max = new_max
    lse = running_max + torch.log(running_sum)
    return lse, (weighted / running_sum[:, None] if need_weighted else None)


def fused_lse(q: torch.Tensor, negatives: torch.Tensor, scale: float,
              need_weighted: bool) -> LseAndWeighted:
    """The scores in ``q``'s dtype, or the autocast dtype under autocast (as the matmuls of the
    other routes are); the kernel always returns ``weighted``, so ``need_weighted`` costs
    nothing.  Raises ``RuntimeError`` where no proven kernel serves ``q``."""
    dtype, kernel = _compute_dtype(q), fused_kernel_for(q)
    if kernel is None:
        raise RuntimeError(f'no fused attention kernel serves {q.device.type} / {dtype} / dim '
                           f'{q.shape[-1]} in torch {torch.__version__}, or it failed its check '
                           "(see the log); use implementation='chunked' or 'auto'")
    with torch.autocast(q.device.type, enabled=False):  # the dtype is chosen above
        weighted, lse = attention_with_lse(q.to(dtype), negatives.to(dtype), scale, kernel)
    acc = _accumulation_dtype(q)
    return lse.to(acc), weighted.to(acc)


def _compute_dtype(q: torch.Tensor) -> torch.dtype:
    device = q.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return q.dtype


def fused_kernel_for(q: torch.Tensor) -> Optional[str]:
    """The proven fused kernel for ``q``'s device, compute dtype and feature size, or None."""
    return proven_fused_kernel(q.device.type, _compute_dtype(q), q.shape[-1])


@functools.lru_cache(maxsize=None)
def proven_fused_kernel(device_type: str, dtype: torch.dtype, dim: int) -> Optional[str]:
    """The fused kernel for this device type, dtype and feature size if, run once on a small
    input, it agrees with the chunked route; else None, with one warning naming the reason.

    A kernel that this build or this GPU lacks or computes wrongly would otherwise fail (or
    mislead) at the first iteration of a run; ``implementation='auto'`` then takes the
    chunked route, which gives the same value and gradient everywhere.
    """
    kernel = fused_kernel(device_type, dtype, dim)
    if kernel is None:
        return None
    failure = _self_check(kernel, torch.device(device_type), dtype, dim)
    if failure is None:
        print_log(f'InfoNCE: fused kernel {kernel} checked for {device_type} / {dtype} / '
                  f'dim {dim}', logger='current', level=logging.INFO)
        return kernel
    print_log(f'InfoNCE: the fused kernel {kernel} failed its check on {device_type} / '
              f'{dtype} / dim {dim} ({failure}); the losses take the chunked path instead '
              "(same value and gradient, slower). implementation='chunked' silences this.",
              logger='current', level=logging.WARNING)
    return None


def _self_check(kernel: str, device: torch.device, dtype: torch.dtype,
                dim: int) -> Optional[str]:
    """Why ``kernel`` cannot be trusted on 67 queries x 300 keys, or None if it can."""
    generator = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(67, dim, generator=generator), dim=1).to(device, dtype)
    keys = F.normalize(torch.randn(300, dim, generator=generator), dim=1).to(device, dtype)
    scale = 5.  # 1 / t at DenseCL's t = 0.2
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        try:
            out, lse = attention_with_lse(q, keys, scale, kernel)
        except Exception as err:  # noqa: BLE001  (any failure of the kernel is the answer)
            return f'{type(err).__name__}: {err}'
        lse_ref, out_ref = chunked_lse(q.float(), keys.float(), scale, True, chunk_size=128)
        lse_error = float((lse.float() - lse_ref).abs().max())
        out_error = float((out.float() - out_ref).abs().max())
    # the same rounded inputs: only the kernel's own arithmetic differs (bf16 / fp16 weights)
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    if not (lse_error <= tolerance and out_error <= tolerance):  # also catches nan
        return (f'log-sum-exp off by {lse_error:.3g} and softmax-weighted keys by '
                f'{out_error:.3g} against the chunked path, tolerance {tolerance:g}')
    return None


def _op(qualified_name: str):
    """The operator overload, or None when this torch build lacks it."""
    return getattr(getattr(torch.ops.aten, qualified_name.split('::')[1], None), 'default', None)


def fused_kernel(device: torch.device, dtype: torch.dtype,
                 dim: Optional[int] = None) -> Optional[str]:
    """Name of the fused kernel that serves ``device``, ``dtype`` and feature size ``dim``, or
    None (unchecked: :func:`proven_fused_kernel` checks it).

    CPU: the flash-attention kernel (fp32, bf16, fp16).  CUDA (``dim`` a multiple of 8, at
    most 256): FlashAttention-2 for bf16 / fp16 on compute capability 8.0 and newer, the
    memory-efficient kernel for fp32 and, before 8.0, for fp16 (it has no bf16 there).
    """
    device = torch.device(device)
    name = None
    if device.type == 'cpu':
        name = _FLASH_CPU if dtype in (torch.float32, torch.bfloat16, torch.float16) else None
    elif device.type == 'cuda' and (dim is None or (dim % 8 == 0 and dim <= 256)):
        ampere = torch.cuda.get_device_capability(device)[0] >= 8
        if dtype in (torch.bfloat16, torch.float16) and ampere:
            name = _FLASH_CUDA
        elif dtype in (torch.float32, torch.float16):
            name = _EFFICIENT_CUDA
    return name if name is not None and _op(name) is not None else None


def attention_with_lse(q: torch.Tensor, keys: torch.Tensor, scale: float,
                       kernel: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Softmax-weighted sum of ``keys`` and the log-sum-exp per row, from a fused kernel.

    Args:
        q (Tensor): ``(M, D)`` queries.
        keys (Tensor): ``(K, D)``, the same dtype and device as ``q``; also the values.
        scale (float): Multiplies the scores (``1 / temperature``).
        kernel (str): A name returned by :func:`fused_kernel` for this device and dtype.

    Returns:
        tuple: ``out`` ``(M, D)`` in the input dtype and ``lse`` ``(M,)`` in float32.
    """
    if kernel not in (_FLASH_CPU, _FLASH_CUDA, _EFFICIENT_CUDA):
        raise ValueError(f'unknown fused attention kernel {kernel!r}')
    rows = q.shape[0]
    if rows == 0:  # the CPU kernel dies with a floating-point exception on no rows
        return q.new_zeros(q.shape), q.new_zeros(0, dtype=torch.float32)
    # The CPU kernel shares (head, block of 256 rows) among its threads: one head of 1568
    # rows (8 images) gives 2 threads 7 blocks, one thread idles at the end.  One head per
    # thread, every key shared by all heads (a stride-0 view), balances them (timing in
    # docs/performance.md).  CUDA kernels get enough blocks from one head.
    heads = min(torch.get_num_threads(), rows) if kernel == _FLASH_CPU else 1
    per_head = -(-rows // heads)  # ceil
    q = F.pad(q, (0, 0, 0, heads * per_head - rows))  # zero rows, cut below
    q4 = q.view(1, heads, per_head, q.shape[1])  # (1, H, M / H, D)
    k4 = keys[None, None].expand(1, heads, *keys.shape)  # (1, H, K, D)
    if kernel == _EFFICIENT_CUDA:
        out, lse = _op(kernel)(q4, k4, k4, None, True, scale=scale)[:2]
    else:
        out, lse = _op(kernel)(q4, k4, k4, scale=scale)[:2]
    # the memory-efficient kernel pads the log-sum-exp to a multiple of its block
    out = out.reshape(heads * per_head, -1)[:rows]  # (M, D)
    lse = lse[0, :, :per_head].reshape(-1)[:rows]  # (M,)
    return out, lse.float()
