"""GreenPCPVT and GreenSVT: masked path against dense references."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models import PCPVT, SVT
from mmpretrain.models.backbones.twins import LocallyGroupedSelfAttention

from greenmim_mm.models import GreenPCPVT, GreenSVT
from greenmim_mm.models.utils import (random_unit_mask, token_coords,
                                      unit_grid, visible_unit_ids)

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


def _visible_rows(feat, vis, grid_w, levels):
    """(B, C, H, W) dense map -> (B, N, C) at the masked path's tokens."""
    rc = token_coords(vis, grid_w, levels)
    b = torch.arange(feat.shape[0])[:, None]
    return feat.permute(0, 2, 3, 1)[b, rc[..., 0], rc[..., 1]]


# --------------------------------------------------------------------------
# dense reference: masked tokens zeroed before every conv, blocked in every
# attention (padding of LSA windows counts as masked)
# --------------------------------------------------------------------------
def _valid_map(mask, grid, side):
    """(B, L) unit mask -> (B, Hu*side, Wu*side) bool, True = visible."""
    v = ~mask.view(-1, *grid)
    return v.repeat_interleave(side, 1).repeat_interleave(side, 2)


def _ref_gsa(attn, x, valid, hw):
    b, n, c = x.shape
    heads = attn.num_heads
    q = attn.q(x).view(b, n, heads, -1).transpose(1, 2)
    kv_valid = valid.flatten(1)  # (B, N)
    if attn.sr_ratio > 1:
        r = attn.sr_ratio
        fmap = (x * kv_valid[..., None]).transpose(1, 2).reshape(b, c, *hw)
        x = attn.norm(attn.sr(fmap).flatten(2).transpose(1, 2))
        kv_valid = valid[:, ::r, ::r].flatten(1)  # cells lie in units
    kv = attn.kv(x).view(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
    logits = (q @ kv[0].transpose(-2, -1)) / (c // heads)**0.5
    logits = logits.masked_fill(~kv_valid[:, None, None], float('-inf'))
    out = logits.softmax(-1) @ kv[1]
    out = out.nan_to_num(0.0).transpose(1, 2).reshape(b, n, c)
    return attn.proj(out)


def _ref_lsa(attn, x, valid, hw):
    b, n, c = x.shape
    w, heads = attn.window_size, attn.num_heads
    x = x.view(b, *hw, c)
    pad_b, pad_r = (-hw[0]) % w, (-hw[1]) % w
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    valid = F.pad(valid, (0, pad_r, 0, pad_b))  # padding = masked
    hp, wp = x.shape[1:3]

    def part(t):  # (B, Hp, Wp, ...) -> (B * nW, w*w, ...)
        t = t.reshape(b, hp // w, w, wp // w, w, *t.shape[3:])
        t = t.transpose(2, 3)
        return t.reshape(b * (hp // w) * (wp // w), w * w, *t.shape[5:])

    xw, vw = part(x), part(valid)
    qkv = attn.qkv(xw).view(xw.shape[0], -1, 3, heads,
                            c // heads).permute(2, 0, 3, 1, 4)
    logits = (qkv[0] @ qkv[1].transpose(-2, -1)) * attn.scale
    logits = logits.masked_fill(~vw[:, None, None], float('-inf'))
    out = (logits.softmax(-1) @ qkv[2]).nan_to_num(0.0)
    out = out.transpose(1, 2).reshape(b, hp // w, wp // w, w, w, c)
    out = out.transpose(2, 3).reshape(b, hp, wp, c)[:, :hw[0], :hw[1]]
    return attn.proj(out.reshape(b, n, c))


def _reference(model, img, mask):
    grid = unit_grid(img.shape[-2:], model.mask_unit)
    x, outs = img, []
    in_side = model.mask_unit  # input pixels / tokens per unit side
    for i in range(model.num_stage):
        x = x * _valid_map(mask, grid, in_side)[:, None]  # zero masked
        x, hw = model.patch_embeds[i](x)  # (B, H*W, C)
        valid = _valid_map(mask, grid, model.unit_sides[i])  # (B, H, W)
        zero = valid.flatten(1)[..., None].float()
        for j, layer in enumerate(model.stages[i]):
            attn = layer.attn
            fn = _ref_lsa if isinstance(
                attn, LocallyGroupedSelfAttention) else _ref_gsa
            x = x + fn(attn, layer.norm1(x), valid, hw)
            x = x + layer.ffn(layer.norm2(x))
            if j == 0:
                pe = model.position_encodings[i].proj
                fmap = (x * zero).transpose(1, 2).reshape(x.shape[0], -1, *hw)
                x = x + pe(fmap).flatten(2).transpose(1, 2)
        x = getattr(model, f'norm_after_stage{i}')(x)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, *hw)  # (B, C, H, W)
        outs.append(x)
        in_side = model.unit_sides[i]
    return outs


# --------------------------------------------------------------------------
@pytest.mark.parametrize('kind,size', [('pcpvt', (224, 224)),
                                       ('pcpvt', (160, 96)),
                                       ('svt', (224, 224)),
                                       ('svt', (224, 448))])
def test_nothing_masked_equals_dense_parent(kind, size):
    green, dense = _models(kind)
    img = torch.randn(2, 3, *size)
    grid = unit_grid(size, 32)
    mask = torch.zeros(2, grid[0] * grid[1], dtype=torch.bool)
    with torch.no_grad():
        sparse_outs = green(img, mask=mask)
        dense_outs = dense(img)
    vis = visible_unit_ids(mask)
    for i, (s, d) in enumerate(zip(sparse_outs, dense_outs)):
        ref = _visible_rows(d, vis, grid[1], 3 - i)
        torch.testing.assert_close(s, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('kind', ['pcpvt', 'svt'])
def test_dense_forward_is_the_parents(kind):
    green, dense = _models(kind)
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(green(img), dense(img)):
            assert torch.equal(a, b)


@pytest.mark.parametrize('kind,size', [('pcpvt', (224, 224)),
                                       ('pcpvt', (128, 192)),
                                       ('svt', (224, 224)),
                                       ('svt', (160, 224))])
def test_random_masks_match_blocked_dense_reference(kind, size):
    green, _ = _models(kind)
    torch.manual_seed(1)
    img = torch.randn(3, 3, *size)
    grid = unit_grid(size, 32)
    mask = random_unit_mask(3, grid, 0.6)
    vis = visible_unit_ids(mask)
    with torch.no_grad():
        sparse_outs = green(img, mask=mask)
        ref_outs = _reference(green, img, mask)
    for i, (s, r) in enumerate(zip(sparse_outs, ref_outs)):
        torch.testing.assert_close(
            s, _visible_rows(r, vis, grid[1], 3 - i), atol=1e-4, rtol=1e-4)


def test_the_reference_sees_masked_tokens_without_zeroing():
    """Sanity check of the test itself: the dense parent on the same
    images differs from the masked path at visible tokens."""
    green, dense = _models('pcpvt')
    img = torch.randn(2, 3, 224, 224)
    mask = random_unit_mask(2, (7, 7), 0.75)
    with torch.no_grad():
        s = green(img, mask=mask)[0]
        d = _visible_rows(dense(img)[0], visible_unit_ids(mask), 7, 3)
    assert (s - d).abs().max() > 1e-2


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
