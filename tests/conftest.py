import os
import os.path as osp

import pytest

import densevit_mm  # noqa: F401  (registers the models, applies compat)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: minutes on 2 cores; run with --runslow')
    config.addinivalue_line('markers', 'gpu: needs CUDA')


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', help='also run tests marked slow')


def pytest_collection_modifyitems(config, items):
    import torch
    skip_slow = pytest.mark.skip(reason='slow: pass --runslow to run it')
    skip_gpu = pytest.mark.skip(reason='needs CUDA, which this machine lacks')
    for item in items:
        if 'slow' in item.keywords and not config.getoption('--runslow'):
            item.add_marker(skip_slow)
        if 'gpu' in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    """A generated data root with ``pretrain/`` holding 32 images of 64x64."""
    from densevit_mm.datasets import write_image_folder
    root = str(tmp_path_factory.mktemp('synthetic'))
    write_image_folder(osp.join(root, 'pretrain'), num_images=32, size=64, seed=0)
    return root


@pytest.fixture
def repo_root():
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
    # Configs name their _base_ files and data relative to the repository.
    monkeypatch.chdir(REPO_ROOT)
    os.environ.setdefault('OMP_NUM_THREADS', '1')


@pytest.fixture(autouse=True)
def _mmpretrain_scope():
    # A test that builds mmseg / mmdet things leaves their registry scope behind otherwise.
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
