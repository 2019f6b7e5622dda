"""InfoNCE against a large queue without materialising the (M, K) logits.

``loss_i = logaddexp(l_pos_i, LSE_j(q_i . n_j / t)) - l_pos_i``: the log-sum-exp over the
queue is accumulated chunk by chunk with an online maximum.  Peak extra memory is
``M x chunk_size`` instead of the naive path's several ``M x (K + 1)`` buffers (logits,
log-softmax, its gradient).
"""
import torch


def _accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    # at least float32, even when the matmuls run in bf16 / fp16 (inputs or autocast)
    return torch.promote_types(x.dtype, torch.float32)


def _chunk_logits(q: torch.Tensor, negatives: torch.Tensor, start: int, chunk: int,
                  temperature: float) -> torch.Tensor:
    logits = q @ negatives[start:start + chunk].t()  # (M, c)
    return logits.to(_accumulation_dtype(q)) / temperature


class _ChunkedInfoNCE(torch.autograd.Function):
    """Loss and its gradient in one pass over the queue chunks.

    With no gradient to the negatives, ``d loss_i / d q_i`` only needs the softmax-weighted
    sum of the negatives, which accumulates with the same online rescaling as the
    log-sum-exp (as flash attention does for its output).  So the forward pass costs the
    naive path's two matmuls per chunk and backward only scales the saved ``(M, D)``
    gradients -- no recomputation, no ``(M, K)`` buffer.
    """

    @staticmethod
    def forward(ctx, q, k, negatives, temperature, chunk):
        acc = _accumulation_dtype(q)
        need_q, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        l_pos = (q.to(acc) * k.to(acc)).sum(dim=1) / temperature  # (M,)
        running_max = torch.full_like(l_pos, float('-inf'))  # (M,)
        running_sum = torch.zeros_like(l_pos)  # (M,): sum_j exp(logit_ij - running_max)
        weighted = q.new_zeros(q.shape, dtype=acc) if need_q else None  # (M, D)
        for start in range(0, negatives.shape[0], chunk):
            logits = _chunk_logits(q, negatives, start, chunk, temperature)  # (M, c)
            new_max = torch.maximum(running_max, logits.max(dim=1).values)
            rescale = torch.exp(running_max - new_max)  # (M,)
            probs = torch.exp(logits - new_max[:, None])  # (M, c), unnormalised
            running_sum = running_sum * rescale + probs.sum(dim=1)
            if need_q:  # sum_j exp(logit_ij - running_max) n_j, rescaled like the sum
                chunk_rows = negatives[start:start + chunk]
                weighted = weighted * rescale[:, None] + (probs.to(chunk_rows.dtype) @
                                                          chunk_rows).to(acc)
            running_max = new_max
        lse_all = torch.logaddexp(l_pos, running_max + torch.log(running_sum))  # (M,)
        # d loss_i / d l_pos_i = p_pos_i - 1 and d loss_i / d logit_ij = p_ij
        pos_weight = torch.exp(l_pos - lse_all) - 1  # (M,)
        scale = 1. / (temperature * q.shape[0])
        grad_q = grad_k = None
        if need_q:
            neg_weight = torch.exp(running_max - lse_all)  # (M,): turns weighted into sum p_ij n_j
            grad_q = (pos_weight[:, None] * k.to(acc) + weighted * neg_weight[:, None]) * scale
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
    return _ChunkedInfoNCE.apply(q, k, negatives.detach(), temperature, chunk_size)
