"""FLOPs of a DenseViT-S training step per image: the yardsticks of tools/benchmark_*.py."""
PEAK_TFLOPS = 790.  # H200 dense bf16 limit, used for the compute fraction on the device
QUEUE_LEN = 65536


def vit_s_train_flops(img_size: int) -> float:
    """FLOPs of the backbone per image and step: 3 passes for the query view (forward +
    backward) and 1 for the key view; 2 FLOPs per multiply-add in every linear and attention
    matmul."""
    n, c, depth = (img_size // 16) ** 2 + 1, 384, 12
    per_layer = 2 * n * (12 * c * c) + 2 * 2 * n * n * c  # qkv, proj, mlp; QK^T and AV
    return 4 * depth * per_layer


def dense_branch_flops(img_size: int, queue_len: int = QUEUE_LEN, dim: int = 384,
                       hidden: int = 2048, dense_dim: int = 128) -> float:
    """FLOPs the dense branch adds per image and step: the logits against the queue and the
    softmax-weighted sum of the queue that the gradient needs (two matmuls of
    N x K x D), and the dense MLP (3 passes for the query view, 1 for the key view)."""
    n = (img_size // 16) ** 2
    logits = 2 * 2 * n * queue_len * dense_dim
    mlp = 4 * 2 * n * (dim * hidden + hidden * dense_dim)
    return logits + mlp
