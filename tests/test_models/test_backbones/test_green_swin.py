"""GreenSwinTransformer's masked path against dense references."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models import SwinTransformer
from mmpretrain.models.utils.attention import ShiftWindowMSA

from greenmim_mm.models import GreenSwinTransformer
from greenmim_mm.models.utils import (random_unit_mask, token_coords,
                                      unit_grid, visible_unit_ids)

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


def _visible_rows(feat, vis, grid_w, levels):
    """(B, C, H, W) dense map -> (B, N, C) at the masked path's tokens."""
    rc = token_coords(vis, grid_w, levels)
    b = torch.arange(feat.shape[0])[:, None]
    return feat.permute(0, 2, 3, 1)[b, rc[..., 0], rc[..., 1]]


# --------------------------------------------------------------------------
# dense reference with attention to masked tokens blocked
# --------------------------------------------------------------------------
def _ref_window_attention(w_msa, x, valid, window, shift):
    """x (B, H, W, C), valid (B, H, W): windowed MSA on the full map where
    no query may attend a masked (or padded) key."""
    b, h, w, c = x.shape
    pad_b, pad_r = (-h) % window, (-w) % window
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    valid = F.pad(valid, (0, pad_r, 0, pad_b))
    hp, wp = x.shape[1:3]
    region = torch.zeros(1, hp, wp, 1)
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))
        valid = torch.roll(valid, (-shift, -shift), (1, 2))
        cnt = 0
        for hs in (slice(0, -window), slice(-window, -shift),
                   slice(-shift, None)):
            for ws in (slice(0, -window), slice(-window, -shift),
                       slice(-shift, None)):
                region[:, hs, ws] = cnt
                cnt += 1
    part = ShiftWindowMSA.window_partition
    xw = part(x, window).reshape(-1, window * window, c)
    vw = part(valid[..., None].float(), window).reshape(-1, window**2) > 0
    rw = part(region, window).reshape(-1, window**2).repeat(b, 1)
    n_heads = w_msa.num_heads
    qkv = w_msa.qkv(xw).reshape(xw.shape[0], -1, 3, n_heads,
                                c // n_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * w_msa.scale, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    bias = w_msa.relative_position_bias_table[
        w_msa.relative_position_index.view(-1)].view(window**2, window**2, -1)
    attn = attn + bias.permute(2, 0, 1)[None]
    allowed = (rw[:, :, None] == rw[:, None, :]) & vw[:, None, :]
    attn = attn.masked_fill(~allowed[:, None], float('-inf'))
    attn = attn.softmax(-1).nan_to_num(0.0)  # masked queries: no keys
    out = (attn @ v).transpose(1, 2).reshape(xw.shape[0], -1, c)
    out = w_msa.proj(out).view(-1, window, window, c)
    out = ShiftWindowMSA.window_reverse(out, hp, wp, window)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    return out[:, :h, :w]


def _reference(model, img, mask):
    """Dense Swin on the full map; masked tokens are blocked in attention
    and zeroed after every block."""
    grid = unit_grid(img.shape[-2:], model.mask_unit)
    x, hw = model.patch_embed(img)
    unit_tok = model.mask_unit // model.patch_size
    valid = (~mask.view(-1, *grid)).repeat_interleave(unit_tok, 1)
    valid = valid.repeat_interleave(unit_tok, 2)  # (B, H0, W0)
    outs = []
    for i, stage in enumerate(model.stages):
        for blk in stage.blocks:
            win, shift = blk.attn.window_size, blk.attn.shift_size
            if min(hw) <= win:
                shift = 0
            y = blk.norm1(x).view(x.shape[0], *hw, -1)
            y = _ref_window_attention(blk.attn.w_msa, y, valid, win, shift)
            x = x + y.reshape(x.shape)
            x = blk.ffn(blk.norm2(x), identity=x)
            x = x * valid.reshape(x.shape[0], -1, 1)
        if i in model.out_indices:
            out = getattr(model, f'norm{i}')(x)
            outs.append(out.view(-1, *hw, out.shape[-1]).permute(0, 3, 1, 2))
        if stage.downsample is not None:
            x, hw = stage.downsample(x, hw)
            valid = valid[:, ::2, ::2]
    return outs


@pytest.mark.parametrize('size,window', [(224, 7), (448, 7), (256, 8)])
def test_nothing_masked_equals_dense_swin(size, window):
    green, dense = _models(window)
    img = torch.randn(2, 3, size, size)
    grid = unit_grid((size, size), 32)
    mask = torch.zeros(2, grid[0] * grid[1], dtype=torch.bool)
    with torch.no_grad():
        sparse_outs = green(img, mask=mask)
        dense_outs = dense(img)
    vis = visible_unit_ids(mask)
    for i, (s, d) in enumerate(zip(sparse_outs, dense_outs)):
        ref = _visible_rows(d, vis, grid[1], 3 - i)
        torch.testing.assert_close(s, ref, atol=1e-4, rtol=1e-4)


def test_dense_forward_is_the_parents():
    green, dense = _models()
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(green(img), dense(img)):
            assert torch.equal(a, b)


@pytest.mark.parametrize('size', [(224, 224), (192, 192), (256, 320),
                                  (448, 448)])
def test_random_masks_match_blocked_dense_reference(size):
    green, _ = _models()
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


def test_masked_path_gradients_and_checkpointing():
    green, _ = _models(with_cp=True)
    green.train()
    img = torch.randn(2, 3, 224, 224)
    mask = random_unit_mask(2, (7, 7), 0.75)
    out = green(img, mask=mask)
    out[-1].sum().backward()
    table = green.stages[0].blocks[1].attn.w_msa.relative_position_bias_table
    assert table.grad is not None and table.grad.abs().sum() > 0
    assert green.patch_embed.projection.weight.grad.abs().sum() > 0


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
