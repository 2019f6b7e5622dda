import pytest
import torch

from densevit_mm.models.losses import GlobalContrastiveLoss, MemoryQueue


def keys(start, n, dim=2):
    """Distinct recognisable rows: row i is [start + i, -(start + i)]."""
    values = torch.arange(start, start + n, dtype=torch.float32)
    return torch.stack([values, -values], dim=1)[:, :dim]


def test_fifo_contents_with_wraparound_and_a_batch_that_does_not_divide():
    queue = MemoryQueue(queue_len=7, feat_dim=2)
    initial = queue.queue.clone()
    queue.enqueue(keys(100, 3))  # rows 0-2
    queue.enqueue(keys(200, 3))  # rows 3-5
    assert int(queue.queue_ptr) == 6
    torch.testing.assert_close(queue.queue[6], initial[6])
    queue.enqueue(keys(300, 3))  # rows 6, 0, 1
    assert int(queue.queue_ptr) == 2
    expected = torch.cat([keys(301, 2), keys(102, 1), keys(200, 3), keys(300, 1)])
    assert torch.equal(queue.queue, expected)
    assert queue.queue_ptr.dtype == torch.long and queue.queue_ptr.shape == (1,)


def test_batch_longer_than_the_queue_keeps_the_last_keys_in_write_order():
    queue = MemoryQueue(queue_len=4, feat_dim=2)
    queue.enqueue(keys(0, 1))  # ptr 1
    queue.enqueue(keys(10, 6))  # written at rows 1,2,3,0,1,2: rows hold 13,14,15,12; ptr 3
    assert int(queue.queue_ptr) == 3
    assert torch.equal(queue.queue, torch.cat([keys(13, 1), keys(14, 2), keys(12, 1)]))


def test_queue_is_in_the_state_dict():
    queue = MemoryQueue(queue_len=5, feat_dim=3)
    queue.enqueue(torch.ones(2, 3))
    state = queue.state_dict()
    assert set(state) == {'queue', 'queue_ptr'}
    other = MemoryQueue(queue_len=5, feat_dim=3)
    other.load_state_dict(state)
    assert torch.equal(other.queue, queue.queue) and int(other.queue_ptr) == 2


def test_initial_rows_are_unit_vectors():
    queue = MemoryQueue(queue_len=9, feat_dim=4)
    torch.testing.assert_close(queue.queue.norm(dim=1), torch.ones(9))


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match='queue_len and feat_dim must be positive'):
        MemoryQueue(queue_len=0)
    with pytest.raises(ValueError, match=r'keys must have shape \(n, 2\)'):
        MemoryQueue(queue_len=4, feat_dim=2).enqueue(torch.ones(3, 5))


def test_global_loss_equals_moco_formula_and_enqueues_normalised_keys():
    loss_fn = GlobalContrastiveLoss(queue_len=11, feat_dim=6, temperature=0.2).double()
    q = torch.randn(4, 6, dtype=torch.float64)
    k = torch.randn(4, 6, dtype=torch.float64)
    before = loss_fn.queue.clone()
    qn, kn = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
    expected = torch.stack([
        -torch.log(torch.exp(qn[i] @ kn[i] / 0.2) /
                   (torch.exp(qn[i] @ kn[i] / 0.2) + torch.exp(before @ qn[i] / 0.2).sum()))
        for i in range(4)]).mean()
    assert abs(float(loss_fn(q, k)) - float(expected)) < 1e-10
    torch.testing.assert_close(loss_fn.queue[:4], kn)
    assert int(loss_fn.queue_ptr) == 4
