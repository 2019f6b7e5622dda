"""Checkpoint formats in and out: timm-layout ViTs, DenseViT pretraining files, strict loading."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import timm
import torch

from densevit_mm.checkpoint import densevit_to_timm, load_densevit_state_dict
from densevit_mm.models import DenseViT

NUM_VIT_S_TENSORS = 150  # cls, pos, patch w/b, 12 x 12 per block, final norm w/b


@pytest.fixture(scope='module')
def timm_vit_s():
    torch.manual_seed(0)
    model = timm.create_model('vit_small_patch16_224', pretrained=False, num_classes=10)
    model.eval()
    return model


def features_of(model: DenseViT, x):
    model.eval()
    with torch.no_grad():
        return model(x)[0]


def test_timm_vit_s_converts_to_identical_features_and_back(tmp_path, timm_vit_s, repo_root):
    torch.save(dict(model=timm_vit_s.state_dict()), tmp_path / 'deit.pth')  # as DeiT ships
    subprocess.run([sys.executable, osp.join(repo_root, 'tools/convert_checkpoint.py'),
                    str(tmp_path / 'deit.pth'), str(tmp_path / 'densevit.pth')], check=True,
                   capture_output=True)
    ours = DenseViT(arch='densevit-s', out_type='raw')
    state, report = load_densevit_state_dict(str(tmp_path / 'densevit.pth'))
    assert report['format'] == 'densevit' and report['prefix'] == 'state_dict.backbone.'
    assert ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = timm_vit_s.forward_features(x)  # (B, 197, C), after the final norm
    torch.testing.assert_close(features_of(ours, x), expected, atol=1e-5, rtol=0)

    subprocess.run([sys.executable, osp.join(repo_root, 'tools/convert_checkpoint.py'),
                    str(tmp_path / 'densevit.pth'), str(tmp_path / 'back.pth'), '--to', 'timm'],
                   check=True, capture_output=True)
    back = timm.create_model('vit_small_patch16_224', pretrained=False, num_classes=0).eval()
    back.load_state_dict(torch.load(tmp_path / 'back.pth', weights_only=True)['model'])
    with torch.no_grad():
        torch.testing.assert_close(back.forward_features(x), expected, atol=1e-5, rtol=0)


def _as(layout: str, state: dict) -> dict:
    """Wrap a timm ViT-S state dict the way each method distributes its weights."""
    if layout == 'deit':
        return dict(model=state)
    if layout == 'dino':
        return {k: v for k, v in state.items() if not k.startswith('head.')}
    if layout == 'dino_full':
        return dict(teacher={f'backbone.{k}': v for k, v in state.items()},
                    student={f'backbone.{k}': v * 0 for k, v in state.items()})
    if layout == 'mae':
        extra = {'mask_token': torch.zeros(1, 1, 384),
                 'decoder_blocks.0.norm1.weight': torch.ones(512),
                 'decoder_embed.weight': torch.zeros(512, 384)}
        return dict(model={**state, **extra})
    if layout == 'mocov3':
        return dict(state_dict={
            **{f'module.base_encoder.{k}': v for k, v in state.items()},
            **{f'module.momentum_encoder.{k}': v * 0 for k, v in state.items()}})
    raise ValueError(layout)


@pytest.mark.parametrize('layout', ['deit', 'dino', 'dino_full', 'mae', 'mocov3'])
def test_other_methods_layouts_are_detected_by_keys(tmp_path, timm_vit_s, layout):
    path = tmp_path / f'{layout}.pth'
    torch.save(_as(layout, timm_vit_s.state_dict()), path)
    state, report = load_densevit_state_dict(str(path))
    assert report['format'] == 'timm'
    assert len(state) == NUM_VIT_S_TENSORS
    # the online / teacher / encoder weights were taken, not the zeroed copies
    torch.testing.assert_close(state['layers.3.attn.qkv.weight'],
                               timm_vit_s.state_dict()['blocks.3.attn.qkv.weight'])
    assert all(not k.startswith('decoder') for k in report['dropped'])  # MAE decoder skipped


def test_pretraining_checkpoint_yields_the_online_backbone(tmp_path):
    online, momentum = DenseViT(arch='densevit-debug'), DenseViT(arch='densevit-debug')
    torch.save(dict(state_dict={
        **{f'backbone.{k}': v for k, v in online.state_dict().items()},
        **{f'target_encoder.module.0.{k}': v for k, v in momentum.state_dict().items()},
        'head.loss_dense.queue': torch.zeros(8, 4)}), tmp_path / 'pre.pth')
    state, report = load_densevit_state_dict(str(tmp_path / 'pre.pth'))
    assert report['prefix'] == 'state_dict.backbone.'
    assert state.keys() == online.state_dict().keys()
    for key, value in online.state_dict().items():
        assert torch.equal(state[key], value)


def test_no_backbone_is_a_clear_error(tmp_path):
    torch.save(dict(state_dict={'conv1.weight': torch.zeros(1)}), tmp_path / 'resnet.pth')
    with pytest.raises(ValueError, match='no ViT backbone found'):
        load_densevit_state_dict(str(tmp_path / 'resnet.pth'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_densevit_state_dict(str(tmp_path / 'missing.pth'))


def pretrained(path, **kwargs):
    return DenseViT(init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'),
                    **kwargs)


def test_strict_init_loads_every_key_and_resizes_the_grid(tmp_path):
    src = DenseViT(arch='densevit-debug')
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in src.state_dict().items()}),
               tmp_path / 'ok.pth')
    model = pretrained(tmp_path / 'ok.pth', arch='densevit-debug', img_size=512)
    model.init_weights()
    assert model.pos_embed.shape == (1, 1 + 32 * 32, 192)
    for key, value in src.state_dict().items():
        if key != 'pos_embed':
            assert torch.equal(model.state_dict()[key], value), key
    # ViTDet style: no CLS token; its row of the position embedding goes too
    no_cls = pretrained(tmp_path / 'ok.pth', arch='densevit-debug', img_size=1024,
                        with_cls_token=False, out_type='featmap', window_size=14)
    no_cls.init_weights()
    assert no_cls.pos_embed.shape == (1, 64 * 64, 192)


def test_strict_init_refuses_missing_unexpected_and_misfit_checkpoints(tmp_path):
    state = {f'backbone.{k}': v for k, v in DenseViT(arch='densevit-debug').state_dict().items()}
    missing = dict(state)
    del missing['backbone.layers.0.attn.qkv.weight']
    torch.save(dict(state_dict=missing), tmp_path / 'missing.pth')
    with pytest.raises(RuntimeError, match=r"missing keys \['layers.0.attn.qkv.weight'\]"):
        pretrained(tmp_path / 'missing.pth', arch='densevit-debug').init_weights()

    torch.save(dict(state_dict={**state, 'backbone.layers.0.gamma': torch.ones(192)}),
               tmp_path / 'extra.pth')
    with pytest.raises(RuntimeError, match=r"unexpected keys \['layers.0.gamma'\]"):
        pretrained(tmp_path / 'extra.pth', arch='densevit-debug').init_weights()

    torch.save(dict(state_dict=state), tmp_path / 'debug.pth')
    with pytest.raises(RuntimeError, match='does not fit this 384-wide'):
        pretrained(tmp_path / 'debug.pth', arch='densevit-s').init_weights()
    with pytest.raises(ValueError, match='has no checkpoint'):
        pretrained('', arch='densevit-debug').init_weights()


def test_densevit_to_timm_round_trip_is_lossless():
    state = DenseViT(arch='densevit-debug').state_dict()
    timm_state, unknown = densevit_to_timm(state)
    assert unknown == []
    from densevit_mm.checkpoint import timm_to_densevit
    again, dropped = timm_to_densevit(timm_state)
    assert dropped == [] and again.keys() == state.keys()


def load_converter(repo_root):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'convert_checkpoint_tool', osp.join(repo_root, 'tools/convert_checkpoint.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def convert(repo_root, src, dst, monkeypatch):
    """``main()`` of tools/convert_checkpoint.py in this process; its SystemExit code."""
    monkeypatch.setattr(sys, 'argv', ['convert_checkpoint.py', str(src), str(dst)])
    with pytest.raises(SystemExit) as stop:
        load_converter(repo_root).main()
    return stop.value.code


def no_checkpoints(tmp_path):
    """A text file, a truncated zip, an image and a checkpoint holding a Python object."""
    (tmp_path / 'notes.pth').write_text('see the README\n')
    torch.save(dict(state_dict={'backbone.layers.0.ln1.weight': torch.ones(256)}),
               tmp_path / 'whole.pth')
    data = (tmp_path / 'whole.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'photo.pth').write_bytes(b'\xff\xd8\xff\xe0' + bytes(100))
    import argparse  # DINO's training checkpoints carry their argparse Namespace
    torch.save(dict(model={}, args=argparse.Namespace(arch='vit_small')), tmp_path / 'dino.pth')
    return tmp_path


@pytest.mark.parametrize('name,what', [
    ('notes.pth', "it is a text file of 15 bytes starting 'see the README' "),
    ('cut.pth', 'it is a zip archive cut short '),
    ('photo.pth', 'it is a JPEG image '),
    ('dino.pth', 'it is a zip archive of '),
])
def test_the_converter_refuses_a_file_that_is_no_checkpoint_in_one_line(
        tmp_path, repo_root, monkeypatch, name, what):
    src = no_checkpoints(tmp_path) / name
    code = convert(repo_root, src, tmp_path / 'out.pth', monkeypatch)
    # a str code: Python prints it alone on stderr and exits with status 1, no traceback
    assert isinstance(code, str) and '\n' not in code
    assert code.startswith(f'tools/convert_checkpoint.py: {src} is not a readable PyTorch '
                           f'checkpoint: {what}')
    assert 'convert_checkpoint.py' not in code[len('tools/convert_checkpoint.py'):]
    assert not (tmp_path / 'out.pth').exists()


def test_the_converter_says_which_objects_safe_loading_refuses(tmp_path, repo_root,
                                                                monkeypatch):
    code = convert(repo_root, no_checkpoints(tmp_path) / 'dino.pth', tmp_path / 'out.pth',
                   monkeypatch)
    assert code.endswith("it holds Python objects that safe loading refuses "
                         "(argparse.Namespace); if you trust its source, torch.load it with "
                         "weights_only=False and torch.save only its weights (e.g. its 'model' "
                         "or 'state_dict' entry)")


def test_the_converter_names_the_file_without_a_backbone(tmp_path, repo_root, monkeypatch):
    torch.save(dict(state_dict={'conv1.weight': torch.zeros(1)}), tmp_path / 'resnet.pth')
    code = convert(repo_root, tmp_path / 'resnet.pth', tmp_path / 'out.pth', monkeypatch)
    assert code.startswith(f'tools/convert_checkpoint.py: {tmp_path / "resnet.pth"}: no ViT '
                           'backbone found in the checkpoint')


def test_the_converter_command_prints_one_line_and_exits_1(tmp_path, repo_root):
    src = no_checkpoints(tmp_path) / 'notes.pth'
    result = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools/convert_checkpoint.py'), str(src),
         str(tmp_path / 'out.pth')], capture_output=True, text=True,
        env=dict(os.environ, PYTHONWARNINGS='ignore'))  # mmengine's pkg_resources warning
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"tools/convert_checkpoint.py: {src} is not a readable PyTorch "
                           "checkpoint: it is a text file of 15 bytes starting 'see the README' (")
    assert line.endswith('); give the path of a .pth checkpoint')  # torch's reason between
