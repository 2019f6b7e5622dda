import os
import os.path as osp

import pytest

import densevit_mm  # noqa: F401  (registers the models, applies compat)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(name: str):
    """The script ``tools/<name>.py`` as a module (tools/ is no package, as in OpenMMLab's
    repositories), loaded once per name; its ``main`` runs only when called."""
    import importlib.util
    import sys
    key = f'densevit_tools.{name}'
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, osp.join(REPO_ROOT, 'tools',
                                                                    f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # dataclasses and pickling look a module up by name
        tools = osp.join(REPO_ROOT, 'tools')
        sys.path.insert(0, tools)  # as for a script: a tool imports its siblings by name
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(tools)
    return sys.modules[key]


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: minutes on 2 cores; run with --runslow')
    config.addinivalue_line('markers', 'gpu: needs CUDA')
    config.addinivalue_line('markers', 'slurm: needs a reachable Slurm cluster (sbatch)')


def slurm_missing():
    """Why no Slurm cluster can take a job here, or None when one can."""
    import shutil
    import subprocess
    if shutil.which('sbatch') is None:
        return 'no Slurm client (sbatch) on this machine'
    state = subprocess.run(['sinfo', '-h', '-o', '%a %T'], capture_output=True, text=True)
    if state.returncode != 0 or 'up' not in state.stdout:
        return f'no Slurm partition is up ({(state.stderr or state.stdout).strip()[:200]})'
    return None


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', help='also run tests marked slow')


def pytest_collection_modifyitems(config, items):
    import torch
    skip_slow = pytest.mark.skip(reason='slow: pass --runslow to run it')
    skip_gpu = pytest.mark.skip(reason='needs CUDA, which this machine lacks')
    missing = slurm_missing() if any('slurm' in item.keywords for item in items) else None
    skip_slurm = pytest.mark.skip(reason=f'needs a Slurm cluster: {missing}; .ci/run starts '
                                  'one with tools/ci/start_slurm_cluster.sh (as root)')
    for item in items:
        if 'slurm' in item.keywords and missing:
            item.add_marker(skip_slurm)
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


@pytest.fixture
def mm_log():
    """Messages that mmengine's current logger (``print_log(..., logger='current')``) emits
    during the test, as ``(level name, text)`` pairs."""
    import logging

    from mmengine.logging import MMLogger

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append((record.levelname, record.getMessage()))

    logger = MMLogger.get_current_instance()
    handler = Collect(level=logging.DEBUG)
    level = logger.level  # an earlier run in this process may have raised it
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def folder_with_bad_images(tmp_path):
    """16 good 64 px scenes (15 PNG, 1 WebP) in class sub-folders, three unreadable ``.jpg``
    files (truncated JPEG, zero bytes, text) and a ``.txt`` file.  Returns
    ``(root, good paths, {bad path: kind})``."""
    import io

    from PIL import Image

    from densevit_mm.datasets import write_image_folder
    root = tmp_path / 'images'
    write_image_folder(str(root / 'class_a'), num_images=15, size=64, seed=0)
    webp = root / 'class_b' / 'scene.webp'
    webp.parent.mkdir()
    Image.open(root / 'class_a' / '000000.png').save(webp, 'WEBP')
    jpeg = io.BytesIO()
    Image.open(root / 'class_a' / '000001.png').convert('RGB').save(jpeg, 'JPEG')
    bad = {root / 'class_b' / 'truncated.jpg': 'truncated',
           root / 'class_b' / 'zero.jpg': 'empty', root / 'class_b' / 'text.jpg': 'text'}
    for path, kind in bad.items():
        path.write_bytes({'truncated': jpeg.getvalue()[:len(jpeg.getvalue()) // 2],
                          'empty': b'', 'text': b'not an image\n'}[kind])
    (root / 'README.txt').write_text('images for a test\n')
    good = sorted(str(p) for p in root.rglob('*') if p.suffix in ('.png', '.webp'))
    return str(root), good, {str(p): kind for p, kind in bad.items()}
