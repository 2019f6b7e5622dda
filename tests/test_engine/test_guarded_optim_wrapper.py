"""GuardedOptimWrapper / GuardedAmpOptimWrapper: a non-finite step changes nothing."""
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub

from densevit_mm.engine import GuardedAmpOptimWrapper, GuardedOptimWrapper


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
    assert optim.loss_scaler is None and optim.cast_dtype == torch.bfloat16
    with optim.optim_context(model):
        assert model(torch.ones(2, 4)).dtype == torch.bfloat16
    step(model, optim)
    assert optim.step_applied is True and 'loss_scaler' not in optim.state_dict()


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
    assert optim.device_type == 'cuda' and (optim.loss_scaler is None) == (dtype == 'bfloat16')
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
