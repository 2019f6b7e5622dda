import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import MODELS

from densevit_mm.models import DenseContrastiveLoss, DenseProjectionNeck, MemoryQueue


# what stop_grad_conv1=True (set by the built-in and debug pretraining configs) leaves untrained
PATCH_PROJECTION = ('backbone.patch_embed.projection.weight',
                    'backbone.patch_embed.projection.bias')


@pytest.fixture
def model():
    cfg = Config.fromfile('configs/pretrain/densevit_debug.py')
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def staged_loss(model, views, samples=None):
    """``model.loss`` inside a training step: its queue writes staged and then committed, as
    GuardedOptimWrapper does around an applied step."""
    queues = [m for m in model.modules() if isinstance(m, MemoryQueue)]
    for queue in queues:
        queue.stage()
    losses = model.loss(views, samples)
    for queue in queues:
        queue.commit()
    return losses


def two_views(B=4, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 3, size, size, generator=g) for _ in range(2)]


def test_neck_shapes_and_pooled_vector():
    neck = DenseProjectionNeck(in_channels=12, hid_channels=32, out_channels=8,
                               dense_out_channels=6)
    cls_token, patch = torch.randn(3, 12), torch.randn(3, 196, 12)
    global_proj, dense, pooled = neck([(cls_token, patch)])
    assert global_proj.shape == (3, 8) and dense.shape == (3, 196, 6)
    torch.testing.assert_close(pooled, dense.mean(dim=1))
    # the dense MLP acts on each token alone: token 5 only depends on patch[:, 5]
    patch2 = patch.clone()
    patch2[:, 6:] = 0
    torch.testing.assert_close(neck([(cls_token, patch2)])[1][:, 5], dense[:, 5])


def test_loss_dict_is_weighted_by_lambda(model):
    views = two_views()
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def losses_at(loss_lambda):
        model.load_state_dict(state)  # same weights, queues and EMA step every time
        model.loss_lambda = loss_lambda
        return {k: float(v.detach()) for k, v in staged_loss(model, views, None).items()}

    raw_global = losses_at(0.)['loss_global']
    raw_dense = losses_at(1.)['loss_dense']
    weighted = losses_at(0.3)
    assert set(weighted) == {'loss_global', 'loss_dense', 'hub_share', 'infonce_global',
                             'infonce_dense'}
    assert weighted['loss_global'] == pytest.approx(0.7 * raw_global, rel=1e-6)
    assert weighted['loss_dense'] == pytest.approx(0.3 * raw_dense, rel=1e-6)
    # logged unweighted, whatever lambda (the curves plot these)
    assert (weighted['infonce_global'], weighted['infonce_dense']) == (raw_global, raw_dense)


def test_every_online_parameter_gets_a_gradient_and_keys_get_none(model):
    losses = staged_loss(model, two_views(), None)
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters()
               if not n.startswith('target_encoder') and p.grad is None]
    assert no_grad == list(PATCH_PROJECTION)  # the config's stop_grad_conv1
    assert all(p.grad is None for p in model.target_encoder.parameters())


def test_momentum_follows_mmengine_convention(model):
    momentum = model.target_encoder.momentum
    assert momentum == 0.001  # DenseCL's m = 0.999, from the config
    staged_loss(model, two_views(seed=0))  # first update: the key encoder copies the online one
    online = dict(model.backbone.named_parameters())
    keyed = dict(model.target_encoder.module[0].named_parameters())
    for name, p in online.items():
        assert torch.equal(keyed[name], p)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)  # pretend an optimiser step
    before = {n: p.clone() for n, p in keyed.items()}
    staged_loss(model, two_views(seed=1), None)
    for name, p in online.items():
        expected = (1 - momentum) * before[name] + momentum * p
        torch.testing.assert_close(keyed[name], expected)


@pytest.mark.parametrize('stop_grad', [True, False])
def test_stop_grad_conv1_keeps_the_patch_projection_through_an_optimiser_step(stop_grad):
    cfg = Config.fromfile('configs/pretrain/densevit_debug.py')
    cfg.model.backbone.stop_grad_conv1 = stop_grad
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)  # AdamW with weight decay
    before = {n: p.clone() for n, p in model.backbone.named_parameters()}
    for seed in range(2):  # the first step also copies the online encoder into the key one
        with optim.optim_context(model):
            loss = sum(model.loss(two_views(seed=seed), None).values())
        optim.update_params(loss)
    after = dict(model.backbone.named_parameters())
    unchanged = {n for n, p in after.items() if torch.equal(p, before[n])}
    kept = {'patch_embed.projection.weight', 'patch_embed.projection.bias'}
    assert unchanged == (kept if stop_grad else set())
    keyed = dict(model.target_encoder.module[0].named_parameters())
    weight = 'patch_embed.projection.weight'
    assert torch.equal(keyed[weight], before[weight]) == stop_grad


def test_both_queues_advance_by_the_batch(model):
    staged_loss(model, two_views(B=4), None)
    assert int(model.head.loss_dense.queue_ptr) == 4
    assert int(model.head.loss_global.queue_ptr) == 4


def test_one_view_is_refused(model):
    with pytest.raises(ValueError, match='two views per image'):
        model.loss([torch.randn(2, 3, 64, 64)], None)


def test_extract_feat_is_the_backbone_output(model):
    x = torch.randn(2, 3, 64, 64)
    (cls_token, patch), = model.extract_feat(x)
    assert cls_token.shape == (2, 192) and patch.shape == (2, 16, 192)


def test_global_only_baseline_has_no_dense_branch():
    cfg = Config.fromfile('configs/builtin/globalonly-mini_pretrain_builtin.py')
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert model.neck.dense_mlp is None and model.head.loss_dense is None
    views = two_views(size=96)
    losses = staged_loss(model, views, None)
    assert set(losses) == {'loss_global', 'infonce_global'}
    assert not losses['infonce_global'].requires_grad
    losses['loss_global'].backward()
    no_grad = {n for n, p in model.named_parameters()
               if not n.startswith('target_encoder') and p.grad is None}
    assert no_grad == set(PATCH_PROJECTION)  # the built-in configs keep it random (MoCo v3)
    cfg.model.loss_lambda = 0.5
    with pytest.raises(ValueError, match='set loss_lambda=0'):
        MODELS.build(cfg.model)


def queue_state(model):
    losses = dict(global_=model.head.loss_global, dense=model.head.loss_dense)
    return {name.rstrip('_'): (loss.queue.clone(), int(loss.queue_ptr))
            for name, loss in losses.items()}


def train_step(model, optim, seed, poison_key=False):
    data = dict(inputs=[(v * 50 + 128).clamp(0, 255) for v in two_views(B=4, seed=seed)],
                data_samples=None)
    forward = model.head.loss_global.forward
    if poison_key:  # an inf in one global key, as the injected run
        def poisoned(q, k):
            k = k.clone()
            k[1, 0] = float('inf')
            return forward(q, k)
        model.head.loss_global.forward = poisoned
    try:
        return model.train_step(data, optim)
    finally:
        model.head.loss_global.forward = forward


@pytest.mark.parametrize('amp', [None, 'float16'])
def test_a_skipped_step_writes_no_key_and_changes_no_weight(model, amp):
    from densevit_mm.engine import GuardedAmpOptimWrapper, GuardedOptimWrapper
    params = [p for n, p in model.named_parameters() if not n.startswith('target_encoder')]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    optim = (GuardedOptimWrapper(optimizer) if amp is None else
             GuardedAmpOptimWrapper(optimizer, dtype=amp,
                                    loss_scale=dict(init_scale=256., growth_interval=1000)))
    train_step(model, optim, seed=0)
    assert optim.step_applied is True
    assert {k: ptr for k, (_, ptr) in queue_state(model).items()} == {'global': 4, 'dense': 4}
    queues = queue_state(model)
    weights = {n: p.clone() for n, p in model.named_parameters()
               if not n.startswith('target_encoder')}
    train_step(model, optim, seed=1, poison_key=True)
    assert optim.step_applied is False
    for name, (queue, ptr) in queue_state(model).items():
        assert ptr == queues[name][1] and torch.equal(queue, queues[name][0]), name
    for n, p in model.named_parameters():
        if not n.startswith('target_encoder'):
            assert torch.equal(p, weights[n]), n
    assert all(bool(torch.isfinite(t).all()) for t in model.target_encoder.state_dict().values())
    if amp == 'float16':
        assert optim.loss_scaler.get_scale() == 128.
    train_step(model, optim, seed=2)
    assert optim.step_applied is True
    assert {k: ptr for k, (_, ptr) in queue_state(model).items()} == {'global': 8, 'dense': 8}


def test_training_needs_a_guarded_optimizer_wrapper(model):
    from mmengine.optim import OptimWrapper
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    before = queue_state(model)
    with pytest.raises(TypeError, match='trains with GuardedOptimWrapper or GuardedAmpOptim'):
        train_step(model, optim, seed=0)
    for name, (queue, ptr) in queue_state(model).items():  # refused before any write
        assert ptr == before[name][1] and torch.equal(queue, before[name][0]), name
    model.eval()  # outside training the losses write at once, as the loss modules do
    model.loss(two_views(), None)
    assert {k: ptr for k, (_, ptr) in queue_state(model).items()} == {'global': 4, 'dense': 4}


def test_the_match_is_computed_once_per_step_and_logged_with_its_hub_share(model, monkeypatch):
    """Identical views through the online encoder and its first EMA copy (equal weights): every
    query patch matches itself, so each key patch is chosen once (hub share exactly 1/16) and
    every match is the true one (accuracy exactly 1)."""
    from mmpretrain.structures import DataSample

    from densevit_mm.models.losses import DenseContrastiveLoss
    matches = []
    plain = DenseContrastiveLoss.extract_correspondence

    def recorded(feat1, feat2):
        matches.append(plain(feat1, feat2))
        return matches[-1]

    monkeypatch.setattr(DenseContrastiveLoss, 'extract_correspondence', staticmethod(recorded))
    view = two_views()[0]
    geometry = torch.tensor([[0., 0., 64., 64., 0., 64., 64.]] * 2)  # both views = the image
    samples = []
    for _ in range(4):
        sample = DataSample()
        sample.set_field(geometry.numpy(), 'view_geometry', field_type='metainfo')
        samples.append(sample)
    out = staged_loss(model, [view, view.clone()], samples)
    assert len(matches) == 1
    assert torch.equal(matches[0], torch.arange(16).expand(4, 16))
    assert float(out['hub_share']) == 1 / 16 and float(out['corr_acc']) == 1.


@pytest.mark.parametrize('centering', [False, True])
def test_match_patches_recovers_a_known_permutation(centering):
    cfg = Config.fromfile('configs/pretrain/densevit_debug.py')
    cfg.model.match_centering = centering
    model = MODELS.build(cfg.model)
    g = torch.Generator().manual_seed(0)
    q_patch = torch.randn(2, 16, 192, generator=g)
    perm = torch.randperm(16, generator=g)
    k_patch = 3. * q_patch[:, perm]  # key patch j is query patch perm[j]; cosine ignores scale
    cls = torch.zeros(2, 192)
    match = model.match_patches(((cls, q_patch), ), ((cls, k_patch), ))  # (B, N)
    assert torch.equal(match, torch.argsort(perm).expand(2, 16))


@pytest.mark.parametrize('centering', [False, True])
def test_match_patches_uses_the_chosen_layer_and_centring(centering):
    cfg = Config.fromfile('configs/pretrain/densevit_debug.py')
    cfg.model.backbone.arch = dict(embed_dims=24, num_layers=3, num_heads=2,
                                   feedforward_channels=48)
    cfg.model.backbone.out_indices = (0, 2)
    cfg.model.neck.in_channels = 24
    cfg.model.match_layer = 0
    cfg.model.match_centering = centering
    model = MODELS.build(cfg.model)
    g = torch.Generator().manual_seed(0)
    q_out = ((torch.randn(2, 24, generator=g), torch.randn(2, 9, 24, generator=g)),
             (torch.randn(2, 24, generator=g), torch.randn(2, 9, 24, generator=g)))
    k_out = ((torch.randn(2, 24, generator=g), torch.randn(2, 9, 24, generator=g)),
             (torch.randn(2, 24, generator=g), torch.randn(2, 9, 24, generator=g)))
    q, k = q_out[0][1], k_out[0][1]  # layer 0: the first output
    if centering:
        q, k = q - q.mean(1, keepdim=True), k - k.mean(1, keepdim=True)
    expected = torch.stack([
        torch.stack([torch.argmax(torch.cosine_similarity(q[b, i][None], k[b], dim=1))
                     for i in range(9)]) for b in range(2)])
    assert torch.equal(model.match_patches(q_out, k_out), expected)
    cfg.model.match_layer = 1
    with pytest.raises(ValueError, match=r'match_layer=1 is not among the backbone out_indices '
                                         r'\[0, 2\]'):
        MODELS.build(cfg.model)


def test_hub_share_counts_the_most_chosen_key():
    from densevit_mm.evaluation import hub_share
    spread = torch.arange(6)[None].repeat(2, 1)  # every key chosen once
    one_hub = torch.zeros(2, 6, dtype=torch.long)
    half = torch.tensor([[0, 0, 0, 1, 2, 3], [5, 5, 5, 5, 5, 5]])
    assert float(hub_share(spread, 6)) == pytest.approx(1 / 6)
    assert float(hub_share(one_hub, 6)) == 1
    assert float(hub_share(half, 6)) == pytest.approx((0.5 + 1) / 2)


def near_tie_patches(B=2, N=16, C=32, seed=0):
    """Backbone outputs whose key patches all lie within ~0.01 rad of their query patch:
    float32 cosines order them, bfloat16 cosines (about 0.004 apart near 1) tie."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N, C, generator=g)
    k = q[:, :1] + 0.01 * torch.randn(B, N, C, generator=g)  # (B, N, C), all near q[:, 0]
    q = q[:, :1] + 0.01 * torch.randn(B, N, C, generator=g)
    cls = torch.randn(B, C, generator=g)
    return ((cls, q),), ((cls, k),)


def test_matching_is_float32_under_bfloat16_autocast(model):
    q_out, k_out = near_tie_patches(C=192)
    q, k = F.normalize(q_out[0][1], dim=2), F.normalize(k_out[0][1], dim=2)
    expected = (q @ k.transpose(1, 2)).argmax(dim=2)  # float32, outside autocast
    bf16 = q.bfloat16() @ k.bfloat16().transpose(1, 2)
    assert (bf16.argmax(dim=2) != expected).float().mean() > 0.3  # the features are near-ties
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.equal(model.match_patches(q_out, k_out), expected)
        assert torch.equal(DenseContrastiveLoss.extract_correspondence(q_out[0][1], k_out[0][1]),
                           expected)


def test_the_loss_under_bfloat16_autocast_matches_in_float32_and_trains(model, monkeypatch):
    """The whole step under CPU bf16 autocast (GuardedAmpOptimWrapper, as --amp): the dense
    positives are the float32 argmax of the backbone features the loss saw, and every
    loss is finite."""
    from densevit_mm.engine import GuardedAmpOptimWrapper
    seen = []
    head_loss = model.head.loss

    def spy(*args, match=None):
        seen.append((args[5].detach(), args[6].detach(), match))
        return head_loss(*args, match=match)

    monkeypatch.setattr(model.head, 'loss', spy)
    params = [p for n, p in model.named_parameters() if not n.startswith('target_encoder')]
    optim = GuardedAmpOptimWrapper(torch.optim.AdamW(params, lr=1e-3))
    for seed in range(2):
        data = dict(inputs=[(v * 50 + 128).clamp(0, 255)
                            for v in two_views(B=8, seed=seed)], data_samples=None)
        log_vars = model.train_step(data, optim)
        assert optim.step_applied is True
        assert all(bool(torch.isfinite(v)) for v in log_vars.values())
    for q_backbone, k_backbone, match in seen:
        assert q_backbone.dtype == torch.float32  # the ViT's final LayerNorm runs in fp32
        expected = DenseContrastiveLoss.extract_correspondence(q_backbone, k_backbone)
        assert torch.equal(match, expected)


def test_key_encoder_ema_equals_mmengines_and_reads_its_count_after_a_load():
    """KeyEncoderEMA keeps mmengine's arithmetic and state dict; a loaded state brings its
    own step count (a host copy that outlived it would lerp where mmengine copies)."""
    from mmengine.model import ExponentialMovingAverage

    from densevit_mm.models.selfsup.key_encoder_ema import KeyEncoderEMA
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    ours = KeyEncoderEMA(online, momentum=0.1)
    theirs = ExponentialMovingAverage(online, momentum=0.1)
    fresh = {k: v.clone() for k, v in ours.state_dict().items()}  # steps 0
    for round_ in range(2):
        for step in range(3):
            with torch.no_grad():
                for p in online.parameters():
                    p.add_(torch.randn_like(p))
            ours.update_parameters(online)
            theirs.update_parameters(online)
            for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
        assert int(ours.steps) == 3
        ours.load_state_dict(fresh)  # back to step 0: the next update copies again
        theirs.load_state_dict(fresh)
