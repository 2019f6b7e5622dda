"""tools/check_images.py flags images over the pixel limit, as training skips them."""
import os.path as osp
import subprocess
import sys

from PIL import Image

from densevit_mm.datasets import write_image_folder
from tests.test_datasets.huge_headers import png_claiming


def check_images(repo_root, folder, *options):
    return subprocess.run([sys.executable, osp.join(repo_root, 'tools/check_images.py'), folder,
                           '--workers', '1', *options], capture_output=True, text=True,
                          timeout=120)


def test_an_image_over_the_pixel_limit_is_listed_with_the_limit(tmp_path, repo_root):
    root = tmp_path / 'images'
    write_image_folder(str(root / 'a'), num_images=3, size=64, seed=0)
    huge = root / 'huge.png'
    png_claiming(huge, 30000, 30000)  # decoding it would take 2.7 GB; checking it does not
    out = tmp_path / 'bad.txt'
    result = check_images(repo_root, str(root), '--out', str(out))
    assert result.returncode == 1, result.stderr[-2000:]
    assert '1 of 4 images unreadable' in result.stdout
    assert out.read_text() == (
        f'{huge}\ttoo large: 30000 x 30000 = 900 MP exceeds the pixel limit of 134.2 MP '
        '(max_pixels=134217728; raise it if images this large are meant to be trained on, or '
        'shrink the file)\n')


def test_max_pixels_takes_an_image_at_the_limit_and_lists_one_a_pixel_over(tmp_path,
                                                                           repo_root):
    root = tmp_path / 'images'
    write_image_folder(str(root), num_images=2, size=64, seed=0)  # 64 x 64 = 4096 pixels
    over = root / 'over.png'
    Image.new('RGB', (241, 17), (90, 90, 200)).save(over)  # 4097 pixels
    result = check_images(repo_root, str(root), '--max-pixels', str(64 * 64))
    assert result.returncode == 1, result.stderr[-2000:]
    assert '1 of 3 images unreadable' in result.stdout
    assert (f'{over}\ttoo large: 241 x 17 = 0.004097 MP exceeds the pixel limit of 0.004096 '
            'MP (max_pixels=4096;') in result.stdout
