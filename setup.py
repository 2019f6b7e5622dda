"""DenseViT: dense contrastive pretraining of Vision Transformers on OpenMMLab.

Install with ``bash tools/setup_env.sh`` (it builds mmcv with ops first; see README).
"""
from setuptools import find_packages, setup

setup(
    name='densevit_mm',
    version='0.1.0',
    description='Dense contrastive self-supervised pretraining of ViTs '
    '(DenseCL for Vision Transformers) with ADE20K / COCO transfer',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['densevit_mm', 'densevit_mm.*']),
    package_data={'densevit_mm': ['benchmark/*.csv']},
    python_requires='>=3.9',
    # Exact versions live in requirements/constraints.txt (pass it with -c);
    # mmcv is built from source with ops by tools/setup_env.sh.
    install_requires=[
        'torch',
        'torchvision',
        'mmengine',
        'mmcv',
        'mmpretrain',
        'mmsegmentation',
        # mmsegmentation imports these without declaring them.
        'ftfy',
        'regex',
        'mmdet',
        'timm',
        'numpy',
        'pillow',
        'matplotlib',
        # nearest-neighbour search of the dense retrieval protocol (tools/dense_retrieval.py)
        'faiss-cpu',
    ],
    extras_require={'tests': ['pytest', 'pytest-timeout']},
)
