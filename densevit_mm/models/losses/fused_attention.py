"""PyTorch's fused attention kernels, called so that they also return the log-sum-exp.

``softmax(q . n_j * scale)`` over a queue of negatives ``n`` is attention with the queue as
keys and values: the kernel returns ``out_i = sum_j softmax_j(q_i . n_j * scale) n_j`` and
``lse_i = LSE_j(q_i . n_j * scale)`` without materialising the ``(M, K)`` scores.  The public
``scaled_dot_product_attention`` does not return the log-sum-exp, so this file calls the
private ``aten`` operators behind it.  They are the only private API the project uses and live
here alone; ``tests/test_models/test_lean_info_nce.py`` fails if a torch upgrade removes or
changes them.
"""
from typing import Optional, Tuple

import torch

_FLASH_CPU = 'aten::_scaled_dot_product_flash_attention_for_cpu'
_FLASH_CUDA = 'aten::_scaled_dot_product_flash_attention'
_EFFICIENT_CUDA = 'aten::_scaled_dot_product_efficient_attention'


def _op(qualified_name: str):
    """The operator overload, or None when this torch build lacks it."""
    return getattr(getattr(torch.ops.aten, qualified_name.split('::')[1], None), 'default', None)


def fused_kernel(device: torch.device, dtype: torch.dtype,
                 dim: Optional[int] = None) -> Optional[str]:
    """Name of the fused kernel that serves ``device``, ``dtype`` and feature size ``dim``, or
    None.

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
    # thread, every key shared by all heads (a stride-0 view), balances them (measured on 2
    # threads: 0.31 s instead of 0.40 s).  CUDA kernels get enough blocks from one head.
    heads = min(torch.get_num_threads(), rows) if kernel == _FLASH_CPU else 1
    per_head = -(-rows // heads)  # ceil
    q = torch.nn.functional.pad(q, (0, 0, 0, heads * per_head - rows))  # zero rows, cut below
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
