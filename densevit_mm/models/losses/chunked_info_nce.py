"""InfoNCE against a large queue without materialising the (M, K) logits.

``loss_i = logaddexp(l_pos_i, LSE_j(q_i . n_j / t)) - l_pos_i``: the log-sum-exp over the
queue is accumulated chunk by chunk with an online maximum, and the backward pass recomputes
each chunk's logits instead of keeping them.  Peak extra memory is ``M x chunk_size`` instead
of the naive path's several ``M x (K + 1)`` buffers (logits, log-softmax, its gradient).
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

    @staticmethod
    def forward(ctx, q, k, negatives, temperature, chunk):
        device = q.device.type
        ctx.autocast = torch.is_autocast_enabled(device)
        ctx.autocast_dtype = torch.get_autocast_dtype(device)
        acc = _accumulation_dtype(q)
        l_pos = (q.to(acc) * k.to(acc)).sum(dim=1) / temperature  # (M,)
        running_max = torch.full_like(l_pos, float('-inf'))  # (M,)
        running_sum = torch.zeros_like(l_pos)  # (M,): sum exp(logit - running_max)
        for start in range(0, negatives.shape[0], chunk):
            logits = _chunk_logits(q, negatives, start, chunk, temperature)  # (M, c)
            new_max = torch.maximum(running_max, logits.max(dim=1).values)
            running_sum = running_sum * torch.exp(running_max - new_max) + \
                torch.exp(logits - new_max[:, None]).sum(dim=1)
            running_max = new_max
        lse_all = torch.logaddexp(l_pos, running_max + torch.log(running_sum))  # (M,)
        ctx.save_for_backward(q, k, negatives, lse_all, l_pos)
        ctx.temperature, ctx.chunk = temperature, chunk
        return (lse_all - l_pos).mean()

    @staticmethod
    def backward(ctx, grad_out):
        q, k, negatives, lse_all, l_pos = ctx.saved_tensors
        t, scale = ctx.temperature, grad_out / q.shape[0]
        # d loss_i / d l_pos_i = p_pos_i - 1; d loss_i / d logit_ij = p_ij (softmax probs)
        pos_weight = (torch.exp(l_pos - lse_all) - 1) * scale / t  # (M,)
        acc = _accumulation_dtype(q)
        grad_q = pos_weight[:, None] * k.to(acc)  # (M, D)
        with torch.autocast(q.device.type, dtype=ctx.autocast_dtype, enabled=ctx.autocast):
            for start in range(0, negatives.shape[0], ctx.chunk):
                probs = torch.exp(_chunk_logits(q, negatives, start, ctx.chunk, t) -
                                  lse_all[:, None])  # (M, c)
                grad_q = grad_q + (probs.to(negatives.dtype) @
                                   negatives[start:start + ctx.chunk]).to(acc) * (scale / t)
        grad_k = pos_weight[:, None] * q.to(acc) if ctx.needs_input_grad[1] else None
        return (grad_q.to(q.dtype), None if grad_k is None else grad_k.to(k.dtype),
                None, None, None)


def chunked_info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor,
                     temperature: float, chunk_size: int = 4096) -> torch.Tensor:
    """Same value and gradient as :func:`info_nce`, in ``O(M x chunk_size)`` extra memory.

    Args:
        q (Tensor): Queries ``(M, D)``, L2-normalised.
        k (Tensor): Positive keys ``(M, D)``, L2-normalised.
        negatives (Tensor): ``(K, D)``, no gradient; ``K`` need not divide by the chunk.
        temperature (float): Softmax temperature.
        chunk_size (int): Queue rows per chunk. Defaults to 4096.
    """
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be positive, got {chunk_size}')
    return _ChunkedInfoNCE.apply(q, k, negatives.detach(), temperature, chunk_size)
