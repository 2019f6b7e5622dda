"""InfoNCE against a large queue without materialising the (M, K) logits.

``loss_i = logaddexp(l_pos_i, lse_i) - l_pos_i`` with ``lse_i = LSE_j(q_i . n_j / t)``, and, as
no gradient flows into the queue,
``d loss_i / d q_i = [(p_pos_i - 1) k_i + exp(lse_i - lse_all_i) out_i] / (t M)`` where
``out_i = sum_j softmax_j(q_i . n_j / t) n_j`` and ``p_pos_i = exp(l_pos_i - lse_all_i)``.
Two paths compute ``lse`` and ``out``:

- fused (:func:`fused_info_nce`): PyTorch's fused attention kernel with the queue as keys and
  values (:mod:`.fused_attention`); the fastest where one exists for the device and dtype;
- chunked (:func:`chunked_info_nce`): chunk by chunk with an online maximum, in plain matmuls;
  the fallback everywhere else.

Both finish the gradient in the forward pass (backward only scales it), so neither keeps the
queue or an ``(M, K)`` buffer alive.  ``info_nce`` is the naive reference they are tested against.
"""
import functools
import logging
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

from .fused_attention import attention_with_lse, fused_kernel

# (q (M, D), negatives (K, D), 1 / t, need out) -> lse (M,) and out (M, D) or None
QueueSoftmax = Callable[[torch.Tensor, torch.Tensor, float, bool],
                        Tuple[torch.Tensor, Optional[torch.Tensor]]]


def _accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    # at least float32, even when the matmuls run in bf16 / fp16 (inputs or autocast)
    return torch.promote_types(x.dtype, torch.float32)


def _chunked_softmax(chunk: int) -> QueueSoftmax:
    def softmax(q, negatives, scale, need_out):
        acc = _accumulation_dtype(q)
        running_max = q.new_full((q.shape[0],), float('-inf'), dtype=acc)  # (M,)
        running_sum = q.new_zeros(q.shape[0], dtype=acc)  # (M,): sum_j exp(logit_ij - max)
        weighted = q.new_zeros(q.shape, dtype=acc) if need_out else None  # (M, D)
        for start in range(0, negatives.shape[0], chunk):
            rows = negatives[start:start + chunk]  # (c, D)
            logits = (q @ rows.t()).to(acc) * scale  # (M, c)
            new_max = torch.maximum(running_max, logits.max(dim=1).values)
            rescale = torch.exp(running_max - new_max)  # (M,)
            probs = torch.exp(logits - new_max[:, None])  # (M, c), unnormalised
            running_sum = running_sum * rescale + probs.sum(dim=1)
            if need_out:  # sum_j exp(logit_ij - max) n_j, rescaled like the sum
                weighted = weighted * rescale[:, None] + (probs.to(rows.dtype) @ rows).to(acc)
            running_max = new_max
        lse = running_max + torch.log(running_sum)
        return lse, (weighted / running_sum[:, None] if need_out else None)
    return softmax


def _fused_softmax(kernel: str, dtype: torch.dtype) -> QueueSoftmax:
    def softmax(q, negatives, scale, need_out):
        with torch.autocast(q.device.type, enabled=False):  # the dtype is chosen by the caller
            out, lse = attention_with_lse(q.to(dtype), negatives.to(dtype), scale, kernel)
        return lse.to(_accumulation_dtype(q)), out.to(_accumulation_dtype(q))
    return softmax


def _apply(q, k, negatives, temperature, queue_softmax):
    if not torch.is_grad_enabled():  # evaluation: no gradients to prepare in forward
        q, k = q.detach(), k.detach()
    return _QueueInfoNCE.apply(q, k, negatives.detach(), temperature, queue_softmax)


class _QueueInfoNCE(torch.autograd.Function):
    """Loss and its gradient in one pass over the queue (see the module docstring)."""

    @staticmethod
    def forward(ctx, q, k, negatives, temperature, queue_softmax):
        acc = _accumulation_dtype(q)
        need_q, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        l_pos = (q.to(acc) * k.to(acc)).sum(dim=1) / temperature  # (M,)
        lse, out = queue_softmax(q, negatives, 1. / temperature, need_q)  # (M,), (M, D)
        lse_all = torch.logaddexp(l_pos, lse)  # (M,)
        # d loss_i / d l_pos_i = p_pos_i - 1 and d loss_i / d logit_ij = p_ij
        pos_weight = torch.exp(l_pos - lse_all) - 1  # (M,)
        scale = 1. / (temperature * q.shape[0])
        grad_q = grad_k = None
        if need_q:
            neg_weight = torch.exp(lse - lse_all)  # (M,): the queue's share of the softmax
            grad_q = (pos_weight[:, None] * k.to(acc) + neg_weight[:, None] * out) * scale
        if need_k:
            grad_k = pos_weight[:, None] * q.to(acc) * scale
        ctx.save_for_backward(grad_q, grad_k)
        ctx.dtypes = (q.dtype, k.dtype)
        return (lse_all - l_pos).mean()

    @staticmethod
    def backward(ctx, grad_out):
        grad_q, grad_k = ctx.saved_tensors
        q_dtype, k_dtype = ctx.dtypes
        return (None if grad_q is None else (grad_q * grad_out).to(q_dtype),
                None if grad_k is None else (grad_k * grad_out).to(k_dtype), None, None, None)


def chunked_info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor,
                     temperature: float, chunk_size: int = 2048) -> torch.Tensor:
    """Same value and gradient as :func:`info_nce`, in ``O(M x chunk_size)`` extra memory.

    Args:
        q (Tensor): Queries ``(M, D)``, L2-normalised.
        k (Tensor): Positive keys ``(M, D)``, L2-normalised.
        negatives (Tensor): ``(K, D)``, no gradient; ``K`` need not divide by the chunk.
        temperature (float): Softmax temperature.
        chunk_size (int): Queue rows per chunk. Defaults to 2048.
    """
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be positive, got {chunk_size}')
    return _apply(q, k, negatives, temperature, _chunked_softmax(chunk_size))


def fused_kernel_for(q: torch.Tensor) -> Optional[str]:
    """The fused kernel for ``q``'s device, compute dtype (the autocast dtype under autocast)
    and feature size, once it has proved itself (:func:`proven_fused_kernel`); None when
    there is none or it failed."""
    return proven_fused_kernel(q.device.type, _compute_dtype(q), q.shape[-1])


@functools.lru_cache(maxsize=None)
def proven_fused_kernel(device_type: str, dtype: torch.dtype, dim: int) -> Optional[str]:
    """The fused kernel for this device type, dtype and feature size if, run once on a small
    input, it agrees with the chunked path; else None, with one warning naming the reason.

    A kernel that this build or this GPU lacks or computes wrongly would otherwise fail (or
    mislead) at the first iteration of a run; ``implementation='auto'`` then takes the
    chunked path, which gives the same value and gradient everywhere.
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
        lse_ref, out_ref = _chunked_softmax(128)(q.float(), keys.float(), scale, True)
        lse_error = float((lse.float() - lse_ref).abs().max())
        out_error = float((out.float() - out_ref).abs().max())
    # the same rounded inputs: only the kernel's own arithmetic differs (bf16 / fp16 weights)
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    if not (lse_error <= tolerance and out_error <= tolerance):  # also catches nan
        return (f'log-sum-exp off by {lse_error:.3g} and softmax-weighted keys by '
                f'{out_error:.3g} against the chunked path, tolerance {tolerance:g}')
    return None


def _compute_dtype(q: torch.Tensor) -> torch.dtype:
    device = q.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return q.dtype


def fused_info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """Same value and gradient as :func:`info_nce`, from a fused attention kernel.

    The scores are computed in ``q``'s dtype, or the autocast dtype under autocast (as the
    matmuls of the other paths are); the log-sum-exp and the gradient in at least float32.

    Args:
        q (Tensor): Queries ``(M, D)``, L2-normalised.
        k (Tensor): Positive keys ``(M, D)``, L2-normalised.
        negatives (Tensor): ``(K, D)``, no gradient.
        temperature (float): Softmax temperature.

    Raises:
        RuntimeError: No fused kernel serves this device and dtype, or it failed its check
            (see :func:`proven_fused_kernel`); :func:`chunked_info_nce` computes the same
            everywhere.
    """
    dtype, kernel = _compute_dtype(q), fused_kernel_for(q)
    if kernel is None:
        raise RuntimeError(f'no fused attention kernel serves {q.device.type} / {dtype} / dim '
                           f'{q.shape[-1]} in torch {torch.__version__}, or it failed its check '
                           "(see the log); use chunked_info_nce (the losses' "
                           "implementation='chunked' or 'auto')")
    return _apply(q, k, negatives, temperature, _fused_softmax(kernel, dtype))
