"""tools/gpu_check.py: every step of the GPU acceptance check, at toy sizes on the CPU
(what the GPU run will do, minus the GPU), and its refusal without CUDA."""
import json
import os.path as osp
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_quick_check_runs_every_step_and_judges_the_run(tmp_path, repo_root):
    out = tmp_path / 'gpu_check'
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/gpu_check.py'), '--device',
                             'cpu', '--quick', '--out', str(out)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / 'gpu_check.json').read_text())
    assert report['ok'] and report['tests']['failed'] == 0
    assert report['tests']['skipped'] >= 6  # the gpu tests, skipped without CUDA
    train = report['pretraining']
    assert train['fused_kernel'] == ('aten::_scaled_dot_product_flash_attention_for_cpu '
                                     '(cpu / torch.bfloat16 / dim 128)')  # --amp: bf16
    assert train['fallback_warnings'] == train['skipped_steps'] == 0
    assert train['syncs_per_step'] == 1 and train['sync_kind'] == 'host reads'
    assert {k: v for k, v in train['checks'].items() if v is not None} == dict(
        ran=True, fused_kernel_taken=True, no_fallback=True, no_skipped_step=True, finite=True,
        one_sync_per_step=True)
    # 12 iterations logged every 4
    assert [row['iter'] for row in train['logged']] == [4, 8, 12]
    routes = report['benchmarks']['lse_routes']['report']['routes']
    assert routes['flex eager']['max_abs_difference'] < 1e-2  # bf16 inputs
    assert '| fused InfoNCE kernel taken |' in result.stdout
    assert 'all checks passed' in result.stdout


def test_without_cuda_it_says_how_to_run_it_anyway(repo_root):
    if __import__('torch').cuda.is_available():
        pytest.skip('this machine has CUDA')
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/gpu_check.py')],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert 'no CUDA device here; --device cpu --quick runs the same steps' in result.stderr
