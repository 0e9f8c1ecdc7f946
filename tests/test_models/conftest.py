import os.path as osp
import sys

# the dense references (tests/test_models/reference) import as `reference`
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
