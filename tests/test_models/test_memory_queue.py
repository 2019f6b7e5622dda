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


def test_a_non_finite_row_never_enters_and_the_rest_keep_their_order(mm_log):
    queue = MemoryQueue(queue_len=6, feat_dim=2)
    initial = queue.queue.clone()
    batch = keys(10, 4)
    batch[1, 0] = float('nan')
    batch[3, 1] = float('inf')
    queue.enqueue(batch)
    assert int(queue.queue_ptr) == 2  # two rows written
    assert torch.equal(queue.queue[:2], torch.stack([batch[0], batch[2]]))
    assert torch.equal(queue.queue[2:], initial[2:])
    assert ('WARNING', 'MemoryQueue: 2 of 4 key rows had non-finite entries and were not '
            'written to the queue') in mm_log


def test_a_loss_given_an_infinite_key_keeps_its_queue_finite():
    # the first row of the table: one inf key used to leave a nan row for good
    loss_fn = GlobalContrastiveLoss(queue_len=8, feat_dim=4)
    k = torch.randn(3, 4)
    k[1, 2] = float('inf')
    loss = loss_fn(torch.randn(3, 4), k)
    assert not torch.isfinite(loss)  # this step is bad; the optimizer wrapper skips it
    assert bool(torch.isfinite(loss_fn.queue).all()) and int(loss_fn.queue_ptr) == 2
    assert torch.isfinite(loss_fn(torch.randn(3, 4), torch.randn(3, 4)))  # the next one is not


def test_staged_keys_wait_for_commit_and_keep_their_order():
    queue = MemoryQueue(queue_len=5, feat_dim=2)
    initial = queue.queue.clone()
    queue.stage()
    queue.enqueue(keys(10, 2))
    queue.stage()  # a second micro-batch of the same step (gradient accumulation)
    queue.enqueue(keys(20, 2))
    assert torch.equal(queue.queue, initial) and int(queue.queue_ptr) == 0
    assert queue.commit() == 0
    assert torch.equal(queue.queue[:4], torch.cat([keys(10, 2), keys(20, 2)]))
    assert int(queue.queue_ptr) == 4
    queue.enqueue(keys(30, 1))  # committing ended the staging: written at once
    assert torch.equal(queue.queue[4], keys(30, 1)[0])


def test_discarded_keys_leave_no_trace():
    queue = MemoryQueue(queue_len=5, feat_dim=2)
    queue.enqueue(keys(0, 2))
    before, ptr = queue.queue.clone(), int(queue.queue_ptr)
    queue.stage()
    queue.enqueue(keys(10, 3))
    assert queue.discard() == 3
    assert torch.equal(queue.queue, before) and int(queue.queue_ptr) == ptr
    assert queue.commit() == 0 and torch.equal(queue.queue, before)


def test_commit_counts_the_rows_it_refused():
    queue = MemoryQueue(queue_len=5, feat_dim=2)
    queue.stage()
    bad = keys(0, 3)
    bad[0, 0] = float('-inf')
    queue.enqueue(bad)
    assert queue.commit() == 1 and int(queue.queue_ptr) == 2


def no_host_reads():
    """Inside ``with no_host_reads():`` reading a tensor value to the host raises."""
    from densevit_mm.engine.hooks.host_sync_count_hook import host_sync_calls

    def refuse(key):
        raise AssertionError(f'{key}: a value was read to the host')
    return host_sync_calls(refuse)


def test_a_commit_vouched_finite_writes_the_same_rows_without_reading_the_device():
    checked, vouched = MemoryQueue(queue_len=7, feat_dim=2), MemoryQueue(queue_len=7, feat_dim=2)
    vouched.load_state_dict(checked.state_dict())
    for start, n in ((100, 3), (200, 5), (300, 9)):  # wraps round, then longer than the queue
        for queue in (checked, vouched):
            queue.stage()
            queue.enqueue(keys(start, n))
        checked.commit()
        with no_host_reads():
            assert vouched.staged_non_finite_rows().shape == ()
            assert vouched.commit(all_finite=True) == 0
        assert torch.equal(vouched.queue, checked.queue)
        assert torch.equal(vouched.queue_ptr, checked.queue_ptr)
    assert int(vouched.queue_ptr) == (3 + 5 + 9) % 7


def test_staged_non_finite_rows_counts_every_staged_batch():
    queue = MemoryQueue(queue_len=5, feat_dim=2)
    assert int(queue.staged_non_finite_rows()) == 0  # nothing staged
    queue.stage()
    bad = keys(0, 3)
    bad[0, 0], bad[2, 1] = float('nan'), float('inf')
    queue.enqueue(bad)
    queue.enqueue(keys(10, 2))
    worse = keys(20, 2)
    worse[1, 0] = float('-inf')
    queue.enqueue(worse)
    assert int(queue.staged_non_finite_rows()) == 3
    assert queue.staging and queue.commit() == 3 and not queue.staging
