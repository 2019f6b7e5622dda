"""tools/plot_training_curves.py: each method's terms unweighted, each with its chance level."""
import json
import math
import sys

import pytest
from PIL import Image

from tests.conftest import load_tool

ptc = load_tool('plot_training_curves')

CONFIGS = {
    'densevit': "model = dict(type='DenseViTSelfSup', head=dict(loss_global=dict(queue_len="
                "4096), loss_dense=dict(queue_len=1024)))\n",
    'mocov3': "model = dict(type='MoCoV3', head=dict(loss=dict(type='CrossEntropyLoss', "
              "loss_weight=0.4)))\ntrain_dataloader = dict(batch_size=64)\n",
    'mae': "model = dict(type='MAE')\n",
    'ibot': "model = dict(type='iBOT', mask_prob=0.5, head=dict(type='iBOTLoss', "
            "out_channels=4096))\n",
}


def fake_run(work_dir, config, entries):
    run = work_dir / '20260101_000000' / 'vis_data'
    run.mkdir(parents=True)
    (run / 'config.py').write_text(config)
    (run / 'scalars.json').write_text(''.join(json.dumps(e) + '\n' for e in entries)
                                      + '{"step": 3, "lo')  # a killed run's last line


def test_chance_levels_and_unweighting(tmp_path):
    for name, config in CONFIGS.items():
        fake_run(tmp_path / name, config, [{'step': 1, 'loss': 3.2}])
    cfg, terms = ptc.terms_of(str(tmp_path / 'densevit'))
    assert [t.key for t in terms] == ['infonce_global', 'infonce_dense']
    assert [t.chance(cfg, 1) for t in terms] == [math.log(4097), math.log(1025)]
    cfg, (term,) = ptc.terms_of(str(tmp_path / 'mocov3'))
    # two view orders, each weighted 2 * temperature: 3.2 logged is 4.0 per order
    assert term.scale(cfg) * 3.2 == pytest.approx(4.0)
    assert term.chance(cfg, 1) == math.log(64) and term.chance(cfg, 8) == math.log(512)
    cfg, (term,) = ptc.terms_of(str(tmp_path / 'mae'))
    assert (term.scale(cfg), term.chance(cfg, 1)) == (1., 1.)
    cfg, terms = ptc.terms_of(str(tmp_path / 'ibot'))
    # the patch term of an unmasked image is 0: chance is ln K times the share masked
    assert [(t.key, t.chance(cfg, 1)) for t in terms] == [('loss_cls', math.log(4096)),
                                                          ('loss_patch', 0.5 * math.log(4096))]
    (tmp_path / 'other').mkdir()
    fake_run(tmp_path / 'other', "model = dict(type='SimCLR')\n", [])
    with pytest.raises(SystemExit, match="no loss terms known for model type 'SimCLR'"):
        ptc.terms_of(str(tmp_path / 'other'))


def test_plot_reads_the_logs_and_skips_a_cut_line(tmp_path, monkeypatch, capsys):
    fake_run(tmp_path / 'densevit', CONFIGS['densevit'], [
        {'step': 10, 'loss': 4.0, 'infonce_global': 8.0, 'infonce_dense': 7.0, 'corr_acc': 0.2},
        {'step': 20, 'loss': 3.5, 'infonce_global': 7.5, 'infonce_dense': 6.5, 'corr_acc': 0.3}])
    fake_run(tmp_path / 'mae', CONFIGS['mae'], [{'step': 10, 'loss': 0.9}])
    series = ptc.read_scalars(str(tmp_path / 'densevit'), ['infonce_dense', 'corr_acc'])
    assert series == {'infonce_dense': ([10, 20], [7.0, 6.5]), 'corr_acc': ([10, 20], [0.2, 0.3])}
    out = tmp_path / 'curves.png'
    monkeypatch.setattr(sys, 'argv', ['plot_training_curves.py', str(tmp_path / 'densevit'),
                                      str(tmp_path / 'mae'), '--out', str(out)])
    ptc.main()
    with Image.open(out) as image:  # two methods and the accuracy panel, 4 in wide each
        assert image.format == 'PNG' and image.size == (1320, 374)
