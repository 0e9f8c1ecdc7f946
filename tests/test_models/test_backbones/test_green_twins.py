"""GreenPCPVT and GreenSVT: dense path, state dict, drop path, errors, low
precision, plan reuse. The masked path's exactness (float64, every
gradient, against an independent dense reference) is tested in
test_green_twins_audit.py."""
import pytest
import torch
from mmpretrain.models import PCPVT, SVT

from greenmim_mm.models import GreenPCPVT, GreenSVT
from greenmim_mm.models.utils import random_unit_mask

PCPVT_TINY = dict(embed_dims=[16, 32, 32, 48], depths=[2, 2, 2, 2],
                  num_heads=[1, 2, 2, 4], patch_sizes=[4, 2, 2, 2],
                  strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                  sr_ratios=[8, 4, 2, 1])
SVT_TINY = dict(PCPVT_TINY, window_sizes=[7, 7, 7, 7])
KINDS = {'pcpvt': (GreenPCPVT, PCPVT, PCPVT_TINY),
         'svt': (GreenSVT, SVT, SVT_TINY)}


def _models(kind, **kw):
    green_cls, dense_cls, arch = KINDS[kind]
    torch.manual_seed(0)
    cfg = dict(arch=arch, out_indices=(0, 1, 2, 3),
               norm_after_stage=[False, False, True, True])
    green = green_cls(**cfg, **kw)
    green.init_weights()
    for p in green.parameters():  # non-trivial biases and norms
        p.data.add_(torch.randn_like(p) * 0.02)
    dense = dense_cls(**cfg)
    dense.load_state_dict(green.state_dict(), strict=True)
    return green.eval(), dense.eval()


@pytest.mark.parametrize('kind', ['pcpvt', 'svt'])
def test_dense_forward_is_the_parents(kind):
    green, dense = _models(kind)
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(green(img), dense(img)):
            assert torch.equal(a, b)


@pytest.mark.parametrize('kind', ['pcpvt', 'svt'])
def test_state_dict_round_trips_with_mmpretrain(kind):
    green_cls, dense_cls, arch = KINDS[kind]
    green, dense = _models(kind)
    assert list(green.state_dict()) == list(dense.state_dict())
    fresh = green_cls(arch=arch, out_indices=(0, 1, 2, 3),
                      norm_after_stage=[False, False, True, True])
    fresh.load_state_dict(dense.state_dict(), strict=True)
    back = dense_cls(arch=arch, out_indices=(0, 1, 2, 3),
                     norm_after_stage=[False, False, True, True])
    back.load_state_dict(fresh.state_dict(), strict=True)
    for k, v in back.state_dict().items():
        assert torch.equal(v, dense.state_dict()[k])


def test_masked_path_gradients_reach_every_conv():
    green, _ = _models('svt', drop_path_rate=0.1)
    green.train()
    img = torch.randn(2, 3, 224, 224)
    mask = random_unit_mask(2, (7, 7), 0.75)
    out = green(img, mask=mask)
    assert [o.shape for o in out] == [(2, 12 * 64, 16), (2, 12 * 16, 32),
                                      (2, 12 * 4, 32), (2, 12, 48)]
    out[-1].sum().backward()
    for name in ('position_encodings.0.proj.weight',
                 'patch_embeds.1.projection.weight',
                 'stages.0.1.attn.sr.weight', 'stages.0.0.attn.qkv.weight'):
        grad = dict(green.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_bf16_autocast_masked_path_is_close_to_fp32():
    green, _ = _models('svt')
    img = torch.randn(2, 3, 224, 224)
    mask = random_unit_mask(2, (7, 7), 0.75)
    with torch.no_grad():
        ref = green(img, mask=mask)[-1]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = green(img, mask=mask)[-1]
    assert torch.isfinite(low).all()
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 0.05, rel


def test_plans_can_be_precomputed_and_reused():
    green, _ = _models('svt')
    img = torch.randn(2, 3, 224, 224)
    mask = random_unit_mask(2, (7, 7), 0.75)
    plans = green.make_plans(mask, (224, 224))
    assert plans[0]['lsa'] is not None and plans[3]['lsa'].identity
    with torch.no_grad():
        a = green(img, mask=mask)
        b = green(img, mask=mask, plans=plans)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_interface_used_by_greenmim():
    green, _ = _models('svt')
    assert (green.mask_unit, green.patch_size, green.unit_sides) == (
        32, 4, [8, 4, 2, 1])


def test_bad_inputs_get_clear_errors():
    green, _ = _models('pcpvt')
    with pytest.raises(ValueError, match='not a multiple of the mask unit'):
        green(torch.randn(1, 3, 200, 224),
              mask=torch.zeros(1, 42, dtype=torch.bool))
    with pytest.raises(ValueError, match='does not match images'):
        green(torch.randn(1, 3, 224, 224),
              mask=torch.zeros(1, 48, dtype=torch.bool))
    with pytest.raises(ValueError, match='Unknown GreenSVT arch'):
        GreenSVT(arch='huge')
    with pytest.raises(ValueError, match='no grouped or depthwise'):
        GreenPCPVT(arch=PCPVT_TINY, sparse_conv_backend='spconv')
    with pytest.raises(ValueError, match='sparse_conv_backend must be'):
        GreenPCPVT(arch=PCPVT_TINY, sparse_conv_backend='dense')
    with pytest.raises(ValueError, match='spans several mask units'):
        GreenPCPVT(arch=dict(PCPVT_TINY, sr_ratios=[16, 4, 2, 1]))
    with pytest.raises(ValueError, match='kernel equals its stride'):
        GreenPCPVT(arch=dict(PCPVT_TINY, patch_sizes=[7, 2, 2, 2]))
