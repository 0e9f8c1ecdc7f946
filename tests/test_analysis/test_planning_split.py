"""planning_split times the parts of make_plans and refuses to report when
it no longer mirrors make_plans."""
import importlib

import pytest
import torch
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401
from greenmim_mm.analysis import PARTS, planning_split
from greenmim_mm.models.utils.grouping import pack_windows

# the module (the package exports its function under the same name)
ps = importlib.import_module('greenmim_mm.analysis.planning_split')


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='GreenSwinTransformer',
        arch=dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])))


def test_parts_are_timed_and_match_make_plans(backbone):
    res = planning_split(backbone, 8, (224, 224), steps=2)
    assert set(res) == set(PARTS) | {'sum', 'make_plans', 'make_plans_min'}
    assert all(v >= 0 for v in res.values())
    assert res['make_plans'] > 0 and res['g_search_knapsack'] > 0
    assert res['make_plans_min'] <= res['make_plans']


def test_a_split_that_drifts_from_make_plans_is_refused(backbone,
                                                        monkeypatch):
    real = ps.search_group_size

    def other_g(hist, coeffs):  # a different group size than make_plans'
        g, _ = real(hist, coeffs)
        return g + 1, pack_windows(hist, g + 1)

    monkeypatch.setattr(ps, 'search_group_size', other_g)
    with pytest.raises(RuntimeError, match='no longer mirrors make_plans'):
        planning_split(backbone, 4, (224, 224), steps=1)


def test_bad_steps(backbone):
    with pytest.raises(ValueError, match='steps >= 1'):
        planning_split(backbone, 4, (224, 224), steps=0)
