"""tools/benchmark_table.py on hand-made work dirs with known metrics."""
import csv
import json
import os
import os.path as osp
import subprocess
import sys

import torch
from PIL import Image

from densevit_mm.datasets import BUILTIN_MARKER


def fake_run(work_dir, checkpoint, data_root, metrics, frozen_stages=-1, column=None,
             lines=None, validates=True):
    """A work dir as mmengine leaves it; ``lines``: the text lines of scalars.json instead of
    a loss and then ``metrics``."""
    run = osp.join(work_dir, '20260101_000000', 'vis_data')
    os.makedirs(run)
    init = 'None' if checkpoint is None else \
        f"dict(type='Pretrained', checkpoint={checkpoint!r}, prefix='backbone.')"
    with open(osp.join(run, 'config.py'), 'w') as f:
        f.write(f"model = dict(backbone=dict(type='mmpretrain.DenseViT', arch='densevit-s', "
                f"frozen_stages={frozen_stages}, init_cfg={init}))\n"
                f"val_dataloader = dict(dataset=dict(data_root={data_root!r}))\n")
        if column:
            f.write(f'benchmark_column = {column!r}\n')
        if validates:
            f.write("val_evaluator = dict(type='IoUMetric')\n")
    with open(osp.join(run, 'scalars.json'), 'w') as f:
        if lines is None:
            lines = [json.dumps({'loss': 1.0, 'step': 10}) + '\n',
                     json.dumps({**metrics, 'step': 20}) + '\n']
        f.write(''.join(lines))


def fake_pretraining(path, loss_lambda, epoch):
    cfg = f"model = dict(type='DenseViTSelfSup', loss_lambda={loss_lambda})\n"
    torch.save(dict(meta=dict(cfg=cfg, epoch=epoch, iter=epoch * 10), state_dict={}), path)


def test_table_from_work_dirs(tmp_path, repo_root):
    data = tmp_path / 'data'
    data.mkdir()
    (data / BUILTIN_MARKER).write_text('{}')
    os.makedirs(data / 'ade')
    fake_pretraining(tmp_path / 'dense.pth', 0.5, 8)
    fake_pretraining(tmp_path / 'global.pth', 0.0, 8)
    root = tmp_path / 'runs'
    fake_run(root / 'seg_dense', str(tmp_path / 'dense.pth'), str(data / 'ade'),
             {'mIoU': 41.25, 'aAcc': 80.0})
    fake_run(root / 'det_dense', str(tmp_path / 'dense.pth'), str(data / 'ade'),
             {'coco/bbox_mAP': 0.375, 'coco/segm_mAP': 0.3125})
    fake_run(root / 'seg_global', str(tmp_path / 'global.pth'), str(data / 'ade'),
             {'mIoU': 30.0})
    # a frozen backbone (all 12 layers) is a probe: its own column, not the fine-tuned mIoU
    fake_run(root / 'seglinear_dense', str(tmp_path / 'dense.pth'), str(data / 'ade'),
             {'mIoU': 20.5}, frozen_stages=12)
    fake_run(root / 'segpartial_global', str(tmp_path / 'global.pth'), str(data / 'ade'),
             {'mIoU': 31.0}, frozen_stages=11)
    fake_run(root / 'seg_random', None, '/nonexistent/real/ade', {'mIoU': 12.5})
    os.makedirs(root / 'pretrain_dense' / '20260101_000000' / 'vis_data')  # no metrics: ignored

    out = tmp_path / 'results'
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/benchmark_table.py'),
                             str(root), '--out', str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with open(out / 'results.csv') as f:
        rows = list(csv.DictReader(f))
    measured = {r['method']: r for r in rows if r['block'] == 'measured'}
    assert set(measured) == {'DenseViT (lambda=0.5)', 'Global-only contrastive (lambda=0)',
                             'Random init'}
    dense = measured['DenseViT (lambda=0.5)']
    assert float(dense['mIoU']) == 41.25 and float(dense['mIoU frozen']) == 20.5
    assert measured['Global-only contrastive (lambda=0)']['mIoU frozen'] == ''
    assert float(dense['APbox']) == 37.5 and float(dense['APmask']) == 31.25
    assert dense['pretraining_epochs'] == '8' and dense['data'] == 'built-in (generated)'
    assert sorted(dense['config'].split(';')) == ['det_dense', 'seg_dense', 'seglinear_dense']
    assert measured['Random init']['data'] == 'real'
    assert measured['Random init']['APbox'] == ''
    published = [r for r in rows if r['block'] == 'published']
    assert published and all(r['source'] for r in published)

    markdown = (out / 'results.md').read_text()
    measured_block, published_block = markdown.split('## Published')
    # one run per cell: its mean and (1), no std
    assert ('| DenseViT (lambda=0.5) | densevit-s | 8 | 41.2 (1) | 20.5 (1) | 37.5 (1) | '
            '31.2 (1) |' in measured_block)
    assert (f'## Left out (no row)\n\n- {root / "pretrain_dense"}: no vis_data/scalars.json '
            'with its config.py (the run stopped before its first log?)\n' in measured_block)
    assert dense['mIoU n'] == '1' and dense['mIoU std'] == ''  # the CSV says the same
    assert 'iBOT' not in measured_block and 'iBOT' in published_block
    with Image.open(out / 'results.png') as image:
        assert image.format == 'PNG' and image.size[0] > 100


def test_no_metrics_is_a_clear_error_that_says_what_was_left_out(tmp_path, repo_root):
    fake_run(tmp_path / 'seg_cut', None, '/data', {}, lines=[json.dumps({'loss': 1.0}) + '\n'])
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/benchmark_table.py'),
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and 'logged mIoU or COCO AP' in result.stderr
    assert (f'left out {tmp_path / "seg_cut"}: no mIoU or COCO AP logged (training cut before '
            'its first validation?)\n') in result.stderr


def test_seeds_are_grouped_and_the_oracle_calibrates_each_column(tmp_path, repo_root):
    data = tmp_path / 'data'
    os.makedirs(data / 'ade')
    (data / BUILTIN_MARKER).write_text('{}')
    oracle = tmp_path / 'oracle.pth'
    torch.save(dict(meta=dict(cfg="model = dict(type='EncoderDecoder')", iter=600),
                    state_dict={}), oracle)
    root = tmp_path / 'runs'
    probe = {'random': [15.0, 16.0, 17.0], 'oracle': [29.0, 30.0, 31.0]}  # gap 14, std 1
    tuned = {'random': [33.0, 35.0, 34.0], 'oracle': [35.0, 33.0, 37.0]}  # gap 1, std 1.6
    for start, checkpoint in (('random', None), ('oracle', str(oracle))):
        for seed in range(3):
            fake_run(root / f'seglinear_{start}_seed{seed}', checkpoint, str(data / 'ade'),
                     {'mIoU': probe[start][seed]}, frozen_stages=12, column='mIoU linear')
            fake_run(root / f'seg_{start}_seed{seed}', checkpoint, str(data / 'ade'),
                     {'mIoU': tuned[start][seed]})
    out = tmp_path / 'results'
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/benchmark_table.py'),
                             str(root), '--out', str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    markdown = (out / 'results.md').read_text()
    assert ('| Supervised oracle (labels) | densevit-s | 600 iters | 35.0 ± 2.0 (3) | '
            '30.0 ± 1.0 (3) |') in markdown
    assert '| Random init | densevit-s | 0 | 34.0 ± 1.0 (3) | 16.0 ± 1.0 (3) |' in markdown
    # pooled std: sqrt((1^2 + 2^2) / 2) = 1.58 for the fine-tuned column
    assert '| mIoU | 34.0 ± 1.0 (3) | 35.0 ± 2.0 (3) | 1.0 | 1.58 | 0.6 | no |' in markdown
    assert ('| mIoU linear | 16.0 ± 1.0 (3) | 30.0 ± 1.0 (3) | 14.0 | 1.00 | 14.0 | yes |'
            in markdown)
    with open(out / 'results.csv') as f:
        rows = {r['method']: r for r in csv.DictReader(f) if r['block'] == 'measured'}
    assert float(rows['Random init']['mIoU linear']) == 16.0
    assert float(rows['Random init']['mIoU linear std']) == 1.0
    assert rows['Random init']['mIoU linear n'] == '3'


def benchmark_table_main(repo_root, argv, monkeypatch):
    """``main()`` of tools/benchmark_table.py in this process."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'benchmark_table_tool', osp.join(repo_root, 'tools/benchmark_table.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(sys, 'argv', ['benchmark_table.py'] + argv)
    tool.main()


def test_a_tree_of_cut_runs_is_read_and_what_is_missing_is_named(tmp_path, repo_root,
                                                                 monkeypatch, capsys):
    fake_pretraining(tmp_path / 'dense.pth', 0.5, 8)
    (tmp_path / 'notes.pth').write_text('see the README\n')
    dense, root = str(tmp_path / 'dense.pth'), tmp_path / 'runs'
    loss = json.dumps({'loss': 1.0, 'step': 10}) + '\n'
    fake_run(root / 'seg_seed0', dense, '/data', {'mIoU': 40.0})
    # killed while writing its last line: the values before it count
    fake_run(root / 'seg_seed1', dense, '/data', {}, lines=[
        loss, json.dumps({'mIoU': 42.0, 'step': 20}) + '\n', '{"loss": 0.9, "st'])
    # a garbled line in the middle: the lines after it count
    fake_run(root / 'det_seed0', dense, '/data', {}, lines=[
        loss, '{"lo\n', json.dumps({'coco/bbox_mAP': 0.375, 'step': 20}) + '\n'])
    fake_run(root / 'seg_cut', dense, '/data', {}, lines=[loss])
    fake_run(root / 'pretrain', None, '/data', {}, lines=[loss], validates=False)
    fake_run(root / 'seg_notes', str(tmp_path / 'notes.pth'), '/data', {'mIoU': 30.0})

    out = tmp_path / 'results'
    benchmark_table_main(repo_root, [str(root), '--out', str(out)], monkeypatch)
    printed = capsys.readouterr()
    scalars = osp.join('20260101_000000', 'vis_data', 'scalars.json')
    skipped = [
        f'{root / "det_seed0" / scalars}, line 2: not JSON (Invalid control character at: '
        "column 5; cut short?), skipped: '{\"lo'",
        f'{root / "seg_seed1" / scalars}, line 3: not JSON (Unterminated string starting at: '
        "column 15; cut short?), skipped: '{\"loss\": 0.9, \"st'"]
    assert printed.err.splitlines() == [f'warning: {line}' for line in skipped]
    left_out = [
        f'- {root / "pretrain"}: no mIoU or COCO AP logged: its config has no val_evaluator '
        '(a pretraining or --no-validate run)',
        f'- {root / "seg_cut"}: no mIoU or COCO AP logged (training cut before its first '
        'validation?)',
        f'- {root / "seg_notes"}: its pretraining checkpoint could not be read: '
        f"{tmp_path / 'notes.pth'} is not a readable PyTorch checkpoint: it is a text file of "
        "15 bytes starting 'see the README' "]
    markdown = (out / 'results.md').read_text()
    for text in (markdown, printed.out):
        assert ('| DenseViT (lambda=0.5) | densevit-s | 8 | 41.0 ± 1.4 (2) | 37.5 (1) | real | '
                'det_seed0, seg_seed0, seg_seed1 |') in text
        section = text.split('## Left out (no row)\n\n')[1].split('\n\n')[0].splitlines()
        assert len(section) == 3
        for line, expected in zip(section, left_out):
            assert line.startswith(expected)
        assert text.split('## Log lines skipped (not JSON)\n\n')[1].split('\n\n')[0] == \
            '\n'.join(f'- {line}' for line in skipped)
    with open(out / 'results.csv') as f:
        row, = [r for r in csv.DictReader(f) if r['block'] == 'measured']
    assert (row['mIoU'], row['mIoU std'][:6], row['mIoU n']) == ('41.0', '1.4142', '2')
    assert (row['APbox'], row['APbox std'], row['APbox n']) == ('37.5', '', '1')
    with Image.open(out / 'results.png') as image:  # the plot takes a cell of one run
        assert image.format == 'PNG'


def test_every_cell_shows_its_number_of_runs_and_one_run_has_no_std():
    from densevit_mm.benchmark.statistics import (calibrate, calibration_markdown,
                                                  format_values)
    assert format_values([]) == '-'
    assert format_values([41.25]) == '41.2 (1)'
    assert format_values([40.0, 42.0]) == '41.0 ± 1.4 (2)'
    # one run per start: a gap, but no seed std to weigh it against
    table = calibration_markdown(calibrate({'mIoU': [12.5]}, {'mIoU': [30.0]}, ['mIoU']))
    assert table.splitlines()[-1] == '| mIoU | 12.5 (1) | 30.0 (1) | 17.5 | - | - | needs seeds |'


def test_peers_are_named_and_retrieval_results_join_their_rows(tmp_path, repo_root):
    """A MoCo v3 checkpoint gives the row 'MoCo v3', a detection config's named column its box
    AP; tools/dense_retrieval.py's JSON joins
    the row of its checkpoint with one value per bank seed; a cut JSON is named and left out,
    and the label oracle (perfect features) is no row."""
    data = tmp_path / 'data'
    os.makedirs(data / 'ade')
    (data / BUILTIN_MARKER).write_text('{}')
    peer = tmp_path / 'mocov3.pth'
    torch.save(dict(meta=dict(cfg="model = dict(type='MoCoV3')", epoch=8), state_dict={}), peer)
    root = tmp_path / 'runs'
    fake_run(root / 'linear_mocov3_seed0', str(peer), str(data / 'ade'), {'mIoU': 18.5},
             frozen_stages=12, column='mIoU linear (frozen)')
    fake_run(root / 'fcos_mocov3_seed0', str(peer), str(data / 'ade'), {'coco/bbox_mAP': 0.047},
             frozen_stages=12, column='APbox (FCOS, frozen backbone)')
    config = tmp_path / 'linear.py'  # the backbone of fake_run's configs
    config.write_text("model = dict(backbone=dict(arch='densevit-s'))\n")

    def retrieval(name, checkpoint, values, oracle=False):
        os.makedirs(root / name)
        (root / name / 'dense_retrieval.json').write_text(json.dumps(dict(
            mIoU_per_seed=values, settings=dict(config=str(config), checkpoint=checkpoint,
                                                data_root=str(data / 'ade'), oracle=oracle))))
    retrieval('retrieval_mocov3', str(peer), [24.0, 25.0, 26.0])
    retrieval('retrieval_random', None, [23.0, 23.5, 24.0])
    retrieval('retrieval_labels', None, [69.0], oracle=True)
    os.makedirs(root / 'retrieval_cut')
    (root / 'retrieval_cut' / 'dense_retrieval.json').write_text('{"mIoU_per')
    out = tmp_path / 'results'
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/benchmark_table.py'),
                             str(root), '--out', str(out)], capture_output=True, text=True,
                            cwd=repo_root)
    assert result.returncode == 0, result.stderr
    markdown = (out / 'results.md').read_text()
    assert ('| MoCo v3 | densevit-s | 8 | 18.5 (1) | 25.0 ± 1.0 (3) | 4.7 (1) | built-in '
            '(generated) | fcos_mocov3_seed0, linear_mocov3_seed0, retrieval_mocov3 |') in markdown
    assert ('| Random init | densevit-s | 0 | - | 23.5 ± 0.5 (3) | - | built-in (generated) | '
            'retrieval_random |') in markdown
    assert 'retrieval_labels' not in markdown
    assert f'- {root / "retrieval_cut" / "dense_retrieval.json"}: not a complete dense ' \
        'retrieval result (JSONDecodeError' in markdown
