"""tools/run_benchmark.py's command line and plan, without running a stage: which methods,
starts, protocols and options each stage gets."""
import pytest

from tests.conftest import load_tool

rb = load_tool('run_benchmark')


def plan(tmp_path, *argv):
    args = rb.parse_args(['--work-dir', str(tmp_path / 'w'), '--data-root', str(tmp_path / 'd'),
                          *argv])
    return args, rb.plan(args, dict(rb.FULL))


def test_default_main_job_is_densevit_mocov3_mae_with_linear_fcos_and_retrieval(tmp_path):
    args, groups = plan(tmp_path)
    assert args.methods == ['mocov3', 'densevit', 'mae']  # the longest first
    assert args.starts == ['random', 'oracle', 'mocov3', 'densevit', 'mae']
    assert [s.name for s in groups['pretrain']] == [
        'pretrain mocov3', 'pretrain densevit', 'pretrain mae', 'supervised oracle']
    assert sorted({s.kind for s in groups['transfer']}) == ['fcos', 'linear']
    assert len(groups['transfer']) == 2 * 5 * 3
    assert [s.name for s in groups['retrieval']] == [f'retrieval {s}' for s in args.starts]
    random_retrieval = groups['retrieval'][0].command
    assert '--checkpoint' not in random_retrieval and '--passes' in random_retrieval
    mae = groups['retrieval'][-1]
    assert mae.inputs == [str(tmp_path / 'w' / 'pretrain_mae' / 'epoch_8.pth')]
    assert mae.outputs == [str(tmp_path / 'w' / 'retrieval_mae' / 'dense_retrieval.json')]


def test_all_methods_and_recipe_options_for_densevit_only(tmp_path):
    args, groups = plan(tmp_path, '--methods', 'all', '--pretrain-options',
                        'model.loss_lambda=0.7')
    assert args.methods == list(rb.PRETRAIN_CONFIGS) and len(args.methods) == 6
    with_option = [s.name for s in groups['pretrain'] if 'model.loss_lambda=0.7' in s.command]
    assert with_option == ['pretrain densevit', 'pretrain globalonly']


def test_starts_must_be_pretrained_here(tmp_path, capsys):
    with pytest.raises(SystemExit):
        plan(tmp_path, '--methods', 'densevit', '--starts', 'random', 'mocov3')
    assert "--starts ['mocov3']: neither random, oracle nor a --methods one" in \
        capsys.readouterr().err
