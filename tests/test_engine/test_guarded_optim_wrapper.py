"""GuardedOptimWrapper / GuardedAmpOptimWrapper: a non-finite step changes nothing."""
import collections

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper

from densevit_mm.engine import GuardedAmpOptimWrapper, GuardedOptimWrapper, bf16_supported
from densevit_mm.engine.hooks.host_sync_count_hook import host_sync_calls
from densevit_mm.models.losses import MemoryQueue


def make(wrapper=GuardedOptimWrapper, device='cpu', **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(4, 3).to(device)
    optim = wrapper(torch.optim.AdamW(model.parameters(), lr=0.1), **kwargs)
    return model, optim


def snapshot(model, optim):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {k: {n: t.clone() for n, t in s.items() if torch.is_tensor(t)}
             for k, s in optim.optimizer.state_dict()['state'].items()})


def assert_same(a, b):
    assert a[0].keys() == b[0].keys() and a[1].keys() == b[1].keys()
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
    for k in a[1]:
        for n in a[1][k]:
            assert torch.equal(a[1][k][n], b[1][k][n]), (k, n)


def step(model, optim, poison=None):
    with optim.optim_context(model):
        loss = model(torch.ones(2, 4, device=model.weight.device)).square().mean()
    if poison == 'loss':
        loss = loss * float('nan')
    elif poison == 'grad':  # a finite loss whose gradient overflows
        model.weight.register_hook(lambda g: torch.full_like(g, float('inf')))
    optim.update_params(loss)
    if poison == 'grad':
        model.weight._backward_hooks.clear()


@pytest.mark.parametrize('poison', ['loss', 'grad'])
def test_a_non_finite_step_changes_no_weight_and_no_optimizer_state(poison, mm_log):
    model, optim = make()
    step(model, optim)  # a good step creates the AdamW moments
    assert optim.step_applied is True
    before = snapshot(model, optim)
    step(model, optim, poison)
    assert optim.step_applied is False
    assert_same(before, snapshot(model, optim))
    assert all(p.grad is None or not p.grad.abs().sum() for p in model.parameters())
    warning = [m for level, m in mm_log if level == 'WARNING']
    assert len(warning) == 1 and warning[0].startswith('iteration 2: non-finite loss or gradients')
    assert 'step skipped, weights, optimizer state and queues unchanged' in warning[0]
    assert '1 in a row, training stops at 20' in warning[0]
    step(model, optim)  # and the run goes on
    assert optim.step_applied is True and optim.consecutive_skips == 0
    assert not torch.equal(before[0]['weight'], model.weight)


def test_training_stops_after_max_consecutive_skips_naming_iterations_and_checkpoint():
    model, optim = make(max_consecutive_skips=3)
    MessageHub.get_current_instance().update_info('last_ckpt', 'work_dirs/x/epoch_4.pth')
    step(model, optim)
    step(model, optim, 'loss')
    step(model, optim)  # a good step in between resets the count
    step(model, optim, 'loss')
    step(model, optim, 'loss')
    with pytest.raises(FloatingPointError,
                       match=r'iterations 4-6: 3 training steps in a row .* last good '
                             r'checkpoint is work_dirs/x/epoch_4.pth'):
        step(model, optim, 'grad')


def test_accumulating_steps_report_none_and_a_bad_micro_batch_spoils_the_update():
    model, optim = make(accumulative_counts=2)
    before = snapshot(model, optim)
    step(model, optim, 'loss')
    assert optim.step_applied is None  # still accumulating
    step(model, optim)
    assert optim.step_applied is False
    assert_same(before, snapshot(model, optim))


def test_the_gradient_norm_is_logged():
    model, optim = make()
    with optim.optim_context(model):
        loss = model(torch.ones(2, 4)).square().mean()
    loss.backward(retain_graph=True)
    expected = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    optim.zero_grad()
    optim.update_params(loss)
    logged = MessageHub.get_current_instance().get_scalar('train/grad_norm').current()
    assert logged == pytest.approx(float(expected), rel=1e-6)


def test_bfloat16_amp_autocasts_without_loss_scaling():
    model, optim = make(GuardedAmpOptimWrapper)
    assert isinstance(optim, AmpOptimWrapper)  # mmengine's, with the guard and bf16 on CPU
    assert not optim.loss_scaler.is_enabled() and optim.cast_dtype == torch.bfloat16
    with optim.optim_context(model):
        assert model(torch.ones(2, 4)).dtype == torch.bfloat16
    step(model, optim)
    assert optim.step_applied is True and optim.state_dict()['loss_scaler'] == {}


def test_float16_overflow_is_skipped_and_the_scale_recovers(mm_log):
    """The float16 path, simulated on CPU with torch's CPU GradScaler: one overflowing step
    halves the scale once and changes nothing; good steps grow it back."""
    model, optim = make(GuardedAmpOptimWrapper, dtype='float16',
                        loss_scale=dict(init_scale=1024., growth_interval=2))
    step(model, optim)
    assert optim.step_applied is True and optim.loss_scaler.get_scale() == 1024.
    before = snapshot(model, optim)
    step(model, optim, 'grad')
    assert optim.step_applied is False
    assert_same(before, snapshot(model, optim))
    assert optim.loss_scaler.get_scale() == 512.
    # the scaler's routine search (finite loss, scale above 1): INFO, not a divergence
    assert ('INFO', 'iteration 2: float16 gradients overflowed; float16 loss scale 1024 -> '
                    '512; step skipped') in mm_log
    assert optim.consecutive_skips == 0
    step(model, optim)
    step(model, optim)
    assert optim.loss_scaler.get_scale() == 1024.
    state = optim.state_dict()
    assert state['loss_scaler']['scale'] == 1024.
    other = make(GuardedAmpOptimWrapper, dtype='float16')[1]
    other.load_state_dict(state)
    assert other.loss_scaler.get_scale() == 1024.
    # a float16 checkpoint resumes under bfloat16: the scaler state is not needed there
    bf16 = make(GuardedAmpOptimWrapper)[1]
    bf16.load_state_dict(optim.state_dict())
    assert not bf16.loss_scaler.is_enabled()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="dtype must be 'bfloat16' or 'float16'"):
        make(GuardedAmpOptimWrapper, dtype='float32')
    with pytest.raises(ValueError, match='max_consecutive_skips must be >= 1'):
        make(max_consecutive_skips=0)
    with pytest.raises(TypeError, match="loss_scale must be 'dynamic'"):
        make(GuardedAmpOptimWrapper, dtype='float16', loss_scale='auto')


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_amp_on_cuda_skips_a_non_finite_step(dtype):
    model, optim = make(GuardedAmpOptimWrapper, device='cuda', dtype=dtype)
    assert optim.device_type == 'cuda' and optim.loss_scaler.is_enabled() == (dtype == 'float16')
    step(model, optim)
    before = snapshot(model, optim)
    step(model, optim, 'grad')
    assert optim.step_applied is False
    assert_same(before, snapshot(model, optim))
    step(model, optim)
    assert optim.step_applied is True


def test_float16_overflow_at_a_scale_of_one_counts_as_divergence(mm_log):
    model, optim = make(GuardedAmpOptimWrapper, dtype='float16', max_consecutive_skips=2,
                        loss_scale=dict(init_scale=2., growth_interval=1000))
    step(model, optim, 'grad')  # scale 2 -> 1: still the scaler's search
    assert optim.consecutive_skips == 0
    step(model, optim, 'grad')  # at 1 the gradients themselves are not finite
    assert optim.consecutive_skips == 1
    assert any(level == 'WARNING' and 'iteration 2: non-finite loss or gradients' in m
               and 'loss scale 1 -> 0.5' in m for level, m in mm_log)
    with pytest.raises(FloatingPointError, match='iterations 2-3: 2 training steps in a row'):
        step(model, optim, 'loss')


def test_with_gradient_accumulation_the_skip_message_names_real_iterations():
    model, optim = make(accumulative_counts=2, max_consecutive_skips=2)
    step(model, optim)
    step(model, optim)  # update at iteration 2
    for _ in range(4):  # updates at iterations 4 and 6 are both bad
        try:
            step(model, optim, 'loss')
        except FloatingPointError as err:
            assert str(err).startswith('iterations 4-6: 2 training steps in a row')
            return
    raise AssertionError('the run was not stopped')


class Keyed(nn.Module):
    """A linear model whose forward pass writes its output rows to a queue, as the
    contrastive losses do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 2)
        self.queue = MemoryQueue(queue_len=6, feat_dim=2)

    def forward(self, x):
        out = self.linear(x)
        self.queue.enqueue(out.detach())
        return out.square().mean()


def keyed_step(model, optim, x, poison=False):
    with optim.optim_context(model):
        loss = model(x)
    optim.update_params(loss * float('nan') if poison else loss)


def test_queue_writes_wait_for_the_decision_and_go_only_with_applied_steps():
    model = Keyed()
    optim = GuardedOptimWrapper(torch.optim.SGD(model.linear.parameters(), lr=0.1))
    initial = model.queue.queue.clone()
    x = torch.arange(8.).reshape(2, 4)
    expected = model.linear(x).detach()
    keyed_step(model, optim, x)
    assert optim.step_applied is True and int(model.queue.queue_ptr) == 2
    assert torch.equal(model.queue.queue[:2], expected) and not model.queue.staging
    before = model.queue.queue.clone()
    keyed_step(model, optim, x + 1, poison=True)
    assert optim.step_applied is False and not model.queue.staging
    assert torch.equal(model.queue.queue, before) and int(model.queue.queue_ptr) == 2
    assert torch.equal(model.queue.queue[2:], initial[2:])


def test_accumulated_micro_batches_are_written_together_in_order():
    model = Keyed()
    optim = GuardedOptimWrapper(torch.optim.SGD(model.linear.parameters(), lr=0.1),
                                accumulative_counts=2)
    x1, x2 = torch.ones(2, 4), 2 * torch.ones(1, 4)
    expected = torch.cat([model.linear(x1), model.linear(x2)]).detach()
    keyed_step(model, optim, x1)
    assert optim.step_applied is None and int(model.queue.queue_ptr) == 0
    keyed_step(model, optim, x2)
    assert optim.step_applied is True and int(model.queue.queue_ptr) == 3
    assert torch.equal(model.queue.queue[:3], expected)


def test_a_non_finite_key_of_an_applied_step_is_dropped_and_counted(mm_log):
    model = Keyed()
    optim = GuardedOptimWrapper(torch.optim.SGD(model.linear.parameters(), lr=0.1))
    forward = model.queue.enqueue

    def poisoned(keys):
        keys = keys.clone()
        keys[0, 0] = float('inf')  # the loss does not see it: the step is good
        forward(keys)
    model.queue.enqueue = poisoned
    keyed_step(model, optim, torch.ones(2, 4))
    assert optim.step_applied is True and int(model.queue.queue_ptr) == 1
    assert MessageHub.get_current_instance().get_scalar('train/dropped_keys').current() == 1
    assert any('1 of 2 key rows had non-finite entries' in m for _, m in mm_log)


@pytest.mark.parametrize('clip_grad', [None, dict(max_norm=0.01), dict(type='value',
                                                                         clip_value=0.01)])
def test_an_applied_update_reads_the_device_once(clip_grad):
    """One read for the decision, the stop flag, the key check and the logged gradient
    norm; clipping reuses that norm (mmengine's reads it again)."""
    model = Keyed()
    kwargs = {} if clip_grad is None else dict(clip_grad=dict(clip_grad))
    optim = GuardedOptimWrapper(torch.optim.SGD(model.linear.parameters(), lr=1.), **kwargs)
    reference = Keyed()
    x = torch.arange(8.).reshape(2, 4)
    with optim.optim_context(model):
        loss = model(x)
    reference(x).backward()
    params = list(reference.linear.parameters())
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if clip_grad and clip_grad.get('type') == 'value':
        torch.nn.utils.clip_grad_value_(params, 0.01)
    elif clip_grad:
        torch.nn.utils.clip_grad_norm_(params, 0.01)
    grads = [p.grad for p in params]
    reads = collections.Counter()
    with host_sync_calls(lambda key: reads.update([key])):
        optim.update_params(loss)
    assert reads == {'read:tolist': 1}
    for p, g, q in zip(model.linear.parameters(), grads, reference.linear.parameters()):
        torch.testing.assert_close(p, q - g)  # SGD, lr 1: the clipped gradient was applied
    logged = MessageHub.get_current_instance().get_scalar('train/grad_norm').current()
    assert logged == pytest.approx(float(norm), rel=1e-6)  # before clipping


def test_a_stop_request_is_agreed_with_the_next_update():
    model, optim = make()
    step(model, optim)
    assert optim.stop_agreed is False
    optim.stop_requested = True  # what CrashSafeCheckpointHook's SIGTERM handler does
    assert optim.stop_agreed is False  # until the ranks agree in the next update
    step(model, optim, 'loss')  # a skipped step carries it too
    assert optim.stop_agreed is True and optim.step_applied is False


def test_bfloat16_emulated_on_a_gpu_does_not_count(monkeypatch):
    """torch.cuda.is_bf16_supported() says True on V100 / T4, which only emulate it."""
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported',
                        lambda including_emulation=True: including_emulation)
    assert bf16_supported('cuda') is False
    assert bf16_supported('cpu') is True
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: True)
    assert bf16_supported('cuda') is True
