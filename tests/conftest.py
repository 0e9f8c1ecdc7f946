import os
import os.path as osp
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))


@pytest.fixture(scope='session')
def repo_root():
    return REPO


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """A small copy of the built-in demo dataset (32 images)."""
    from make_demo_data import main
    root = tmp_path_factory.mktemp('demo')
    main(['--out', str(root), '--num', '32', '--size', '224'])
    return str(root)


os.environ.setdefault('OMP_NUM_THREADS', '2')
