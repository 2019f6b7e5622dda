"""InfoNCE against a queue as one autograd Function, whichever route serves the queue.

``loss_i = logaddexp(l_pos_i, lse_i) - l_pos_i`` with ``lse_i = LSE_j(q_i . n_j / t)``, and, as
no gradient flows into the queue,
``d loss_i / d q_i = [(p_pos_i - 1) k_i + exp(lse_i - lse_all_i) weighted_i] / (t M)`` where
``weighted_i = sum_j softmax_j(q_i . n_j / t) n_j`` and ``p_pos_i = exp(l_pos_i - lse_all_i)``.
:func:`.lse_routes.queue_softmax` gives ``lse`` and ``weighted`` by the route asked for; the
Function finishes the gradient in the forward pass (backward only scales it), so no route
keeps the queue or an ``(M, K)`` buffer alive.
"""
import torch

from .lse_routes import queue_softmax


def info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float,
             implementation: str = 'auto', chunk_size: int = 2048) -> torch.Tensor:
    """Mean over rows of ``-log(exp(q.k/t) / (exp(q.k/t) + sum_j exp(q.n_j/t)))``.

    Args:
        q (Tensor): Queries ``(M, D)``, L2-normalised.
        k (Tensor): The positive key of each query ``(M, D)``, L2-normalised.
        negatives (Tensor): Negative keys ``(K, D)``, L2-normalised; no gradient flows
            into them.
        temperature (float): Softmax temperature ``t``.
        implementation (str): The route to the log-sum-exp over the queue, all to the same
            value and gradient: ``'fused'`` (a fused attention kernel), ``'chunked'``,
            ``'naive'`` (all ``(M, K)`` scores at once) or ``'auto'``: fused where a proven
            kernel serves the device and dtype, chunked elsewhere. Defaults to ``'auto'``.
        chunk_size (int): Queue rows per chunk of the chunked route. Defaults to 2048.

    Returns:
        Tensor: Scalar loss, in at least float32.

    Raises:
        ValueError: An unknown ``implementation`` or a ``chunk_size`` below 1.
        RuntimeError: ``'fused'`` where no kernel serves the device and dtype, or it failed
            its check (:func:`.lse_routes.proven_fused_kernel`).
    """
    if not torch.is_grad_enabled():  # evaluation: no gradients to prepare in forward
        q, k = q.detach(), k.detach()
    return _InfoNCE.apply(q, k, negatives.detach(), temperature, implementation, chunk_size)


class _InfoNCE(torch.autograd.Function):
    """Loss and its gradient in one pass over the queue (see the module docstring)."""

    @staticmethod
    def forward(ctx, q, k, negatives, temperature, implementation, chunk_size):
        need_q, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        lse, weighted = queue_softmax(q, negatives, 1. / temperature, need_q,
                                      implementation, chunk_size)  # (M,), (M, D) or None
        acc = lse.dtype  # at least float32, whatever the dtype of the matmuls
        l_pos = (q.to(acc) * k.to(acc)).sum(dim=1) / temperature  # (M,)
        lse_all = torch.logaddexp(l_pos, lse)  # (M,)
        # d loss_i / d l_pos_i = p_pos_i - 1 and d loss_i / d logit_ij = p_ij
        pos_weight = torch.exp(l_pos - lse_all) - 1  # (M,)
        scale = 1. / (temperature * q.shape[0])
        grad_q = grad_k = None
        if need_q:
            neg_weight = torch.exp(lse - lse_all)  # (M,): the queue's share of the softmax
            grad_q = (pos_weight[:, None] * k.to(acc) + neg_weight[:, None] * weighted) * scale
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
                None if grad_k is None else (grad_k * grad_out).to(k_dtype), None, None, None,
                None)
