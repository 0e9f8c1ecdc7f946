"""GreenSwinTransformer: dense path, state dict, errors, low precision,
plan reuse. The masked path's exactness (float64, every gradient, against
an independent dense reference) is tested in test_green_swin_audit.py and
test_green_swin_fuzz.py."""
import pytest
import torch
from mmpretrain.models import SwinTransformer

from greenmim_mm.models import GreenSwinTransformer
from greenmim_mm.models.utils import random_unit_mask

TINY = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])


def _models(window=7, **kw):
    torch.manual_seed(0)
    cfg = dict(arch=TINY, window_size=window, drop_path_rate=0.,
               out_indices=(0, 1, 2, 3), **kw)
    green = GreenSwinTransformer(**cfg)
    green.init_weights()
    for p in green.parameters():  # non-trivial biases and bias tables
        p.data.add_(torch.randn_like(p) * 0.02)
    dense = SwinTransformer(**cfg)
    dense.load_state_dict(green.state_dict(), strict=True)
    green.eval()  # SwinTransformer.train() returns None: no chaining
    dense.eval()
    return green, dense


def test_dense_forward_is_the_parents():
    green, dense = _models()
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(green(img), dense(img)):
            assert torch.equal(a, b)


def test_state_dict_round_trips_with_mmpretrain_swin():
    green, dense = _models()
    assert list(green.state_dict()) == list(dense.state_dict())
    fresh = GreenSwinTransformer(arch=TINY, out_indices=(0, 1, 2, 3))
    fresh.load_state_dict(dense.state_dict(), strict=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, dense.state_dict()[k])


def test_bad_inputs_get_clear_errors():
    green, _ = _models()
    with pytest.raises(ValueError, match='not a multiple of the mask unit'):
        green(torch.randn(1, 3, 200, 224),
              mask=torch.zeros(1, 42, dtype=torch.bool))
    with pytest.raises(ValueError, match='does not match images'):
        green(torch.randn(1, 3, 224, 224),
              mask=torch.zeros(1, 48, dtype=torch.bool))
    with pytest.raises(ValueError, match='window_size must be a positive'):
        GreenSwinTransformer(arch=TINY, window_size=0)
    with pytest.raises(ValueError, match='Unknown Swin arch'):
        GreenSwinTransformer(arch='huge')


def test_bf16_autocast_masked_path_is_close_to_fp32():
    green, _ = _models()
    img = torch.randn(2, 3, 224, 224)
    mask = random_unit_mask(2, (7, 7), 0.75)
    with torch.no_grad():
        ref = green(img, mask=mask)[-1]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = green(img, mask=mask)[-1]
    assert low.dtype == torch.bfloat16
    assert torch.isfinite(low).all()
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 0.05, rel


def test_plans_can_be_precomputed_and_reused():
    green, _ = _models()
    img = torch.randn(2, 3, 224, 224)
    mask = random_unit_mask(2, (7, 7), 0.75)
    plans = green.make_plans(mask, (224, 224))
    with torch.no_grad():
        a = green(img, mask=mask)
        b = green(img, mask=mask, plans=plans)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_bf16_backward_inside_autocast_matches_fp32():
    """The bias gather's sparse backward runs in fp32 even when backward is
    called inside the autocast block (MKL has no bf16 sparse matmul)."""
    green, _ = _models()
    green.train()
    img = torch.randn(2, 3, 224, 224)
    mask = random_unit_mask(2, (7, 7), 0.75)
    table = green.stages[0].blocks[1].attn.w_msa.relative_position_bias_table

    def table_grad(autocast):
        green.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = green(img, mask=mask)[-1]
            out.float().square().mean().backward()
        return table.grad.clone()

    ref, low = table_grad(False), table_grad(True)
    assert low.dtype == table.dtype == torch.float32
    rel = (low - ref).norm() / ref.norm()
    assert rel < 0.1, rel
