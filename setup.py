from setuptools import find_packages, setup


def read_version():
    ns = {}
    with open('greenmim_mm/version.py') as f:
        exec(f.read(), ns)
    return ns['__version__']


setup(
    name='greenmim_mm',
    version=read_version(),
    description='GreenMIM masked image modelling for hierarchical ViTs '
    '(Swin, Twins) as an OpenMMLab plugin',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['greenmim_mm', 'greenmim_mm.*']),
    python_requires='>=3.8',
    # torch/torchvision and mmcv (built with ops) are installed by
    # tools/install.sh, which keeps a working pair if one is present.
    install_requires=[
        'mmengine>=0.10.0,<1.0', 'mmpretrain>=1.2.0', 'numpy',
        'scikit-image'
    ],
    extras_require={
        'det': ['mmdet>=3.3.0', 'pycocotools'],
        'sparse': ['spconv-cu120>=2.3.6'],
        'tests': ['pytest'],
    },
    license='Apache-2.0',
)
