"""Invariants of GreenSwinTransformer's grouping plans on adversarial masks,
checked against mmpretrain's own windowing (its shift rule, its
``get_attn_mask`` regions, each block's ``relative_position_index``), with
token coordinates from the independent contract order
(tests/test_models/reference), not from greenmim_mm.

For every stage and every (window, shift) plan:
- every visible token sits in exactly one slot, holding its true (row, col);
- two slots may attend each other exactly when dense Swin puts both tokens
  in the same sample, the same (shifted) window and the same region;
  a padding slot attends no token;
- for every allowed pair, the offset of the slots' coordinates is the
  relative position dense Swin uses (the block's own index buffer).
"""
import pytest
import torch
from mmpretrain.models.utils.attention import ShiftWindowMSA
from reference import contract_coords, swin_shift

from greenmim_mm.models import GreenSwinTransformer

ARCH = dict(embed_dims=8, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2])


def _masks(kind, b, grid):
    hu, wu = grid
    L = hu * wu
    r = torch.arange(L) // wu
    c = torch.arange(L) % wu
    if kind == 'all-visible':
        return torch.zeros(b, L, dtype=torch.bool)
    if kind == 'one-unit-each':  # a different single unit per sample
        m = torch.ones(b, L, dtype=torch.bool)
        m[torch.arange(b), (torch.arange(b) * 7 + 3) % L] = False
        return m
    if kind == 'checkerboard':
        return ((r + c) % 2 == 1).expand(b, L).clone()
    if kind == 'border':  # only the border units visible
        inner = (r > 0) & (r < hu - 1) & (c > 0) & (c < wu - 1)
        return inner.expand(b, L).clone()
    if kind == 'identical':
        gen = torch.Generator().manual_seed(0)
        one = torch.randperm(L, generator=gen) < (3 * L) // 4
        return one.expand(b, L).clone()
    raise KeyError(kind)


CONFIGS = {
    'w7-224': (7, (224, 224), False),
    'w7-192x256-psm': (7, (192, 256), True),
    'w6-224x288': (6, (224, 288), False),
    'w12-384x256-psm': (12, (384, 256), True),
    'w3-96x160': (3, (96, 160), False),
}
MASKS = ['all-visible', 'one-unit-each', 'checkerboard', 'border',
         'identical']


def _expected_windows(coords, hw, window, shift):
    """Dense Swin's window and in-window position of every token:
    pad to a multiple of the window, roll by -shift, partition."""
    hp = -(-hw[0] // window) * window
    wp = -(-hw[1] // window) * window
    r = (coords[:, 0] - shift) % hp
    c = (coords[:, 1] - shift) % wp
    win = (r // window) * (wp // window) + c // window
    pos = (r % window) * window + c % window
    mask = ShiftWindowMSA.get_attn_mask((hp, wp), window, shift)
    return win, pos, mask  # mask: (nW, w², w²), 0 = may attend, or None


def _check_plan(gp, blocks, coords, sample, hw, window, shift):
    n_tok = coords.shape[0]
    slots = gp.num_groups * gp.group_size
    g = gp.group_size
    ts = gp.token_slot
    assert ts.shape == (n_tok,)
    assert ts.min() >= 0 and ts.max() < slots
    assert torch.unique(ts).numel() == n_tok, 'two tokens share a slot'
    assert torch.equal(gp.slot_rc[ts], coords), 'slot holds wrong (row, col)'
    # what dense Swin allows between the tokens in each pair of slots
    slot_tok = torch.full((slots,), -1, dtype=torch.long)
    slot_tok[ts] = torch.arange(n_tok)
    tok = slot_tok.view(-1, g)  # (G, g)
    real = tok >= 0
    t = tok.clamp(min=0)
    win, pos, amask = _expected_windows(coords, hw, window, shift)
    ti, tj = t[:, :, None].expand(-1, g, g), t[:, None, :].expand(-1, g, g)
    allowed = (sample[ti] == sample[tj]) & (win[ti] == win[tj])
    if amask is not None:
        allowed &= amask[win[ti], pos[ti], pos[tj]] == 0
    both = real[:, :, None] & real[:, None, :]
    allowed &= both
    sw = gp.same_window
    assert sw.shape == (gp.num_groups, g, g)
    assert torch.equal(sw & both, allowed), 'attention pattern != dense Swin'
    one_pad = real[:, :, None] ^ real[:, None, :]
    assert not (sw & one_pad).any(), 'a padding slot attends a token'
    # relative positions of allowed pairs: slot offsets vs dense's buffer
    rc = gp.slot_rc.view(-1, g, 2)
    d = rc[:, :, None] - rc[:, None, :]  # (G, g, g, 2)
    own = (d[..., 0] + window - 1) * (2 * window - 1) + d[..., 1] + window - 1
    for blk in blocks:
        rpi = blk.attn.w_msa.relative_position_index
        dense = rpi[pos[ti], pos[tj]]
        assert torch.equal(own[allowed], dense[allowed]), 'relative position'


@pytest.mark.parametrize('kind', MASKS)
@pytest.mark.parametrize('config', list(CONFIGS))
def test_plans_match_dense_swin_windows(config, kind):
    window, size, psm = CONFIGS[config]
    model = GreenSwinTransformer(arch=ARCH, window_size=window,
                                 pad_small_map=psm)
    grid = (size[0] // 32, size[1] // 32)
    b = 3
    mask = _masks(kind, b, grid)
    assert len(set((~mask).sum(1).tolist())) == 1
    plans = model.make_plans(mask, size)
    assert len(plans) == 4
    for i, stage in enumerate(model.stages):
        side = 8 >> i
        hw = (grid[0] * side, grid[1] * side)
        # plan keys: mmpretrain's shift rule for every block
        keys = {}
        for blk in stage.blocks:
            a = blk.attn
            key = (a.window_size,
                   swin_shift(hw, a.window_size, a.shift_size,
                              a.pad_small_map))
            keys.setdefault(key, []).append(blk)
        assert set(plans[i]) == set(keys), (i, set(plans[i]), set(keys))
        coords = contract_coords(mask, grid, side)  # (B, N, 2)
        sample = torch.arange(b).repeat_interleave(coords.shape[1])
        for (w, s), blocks in keys.items():
            _check_plan(plans[i][(w, s)].to('cpu'), blocks,
                        coords.reshape(-1, 2), sample, hw, w, s)


def test_shifted_regions_are_exercised():
    """The configs reach shifted windows that wrap around and small maps
    that keep their shift (pad_small_map)."""
    seen = set()
    for window, size, psm in CONFIGS.values():
        model = GreenSwinTransformer(arch=ARCH, window_size=window,
                                     pad_small_map=psm)
        grid = (size[0] // 32, size[1] // 32)
        for i, stage in enumerate(model.stages):
            hw = (grid[0] * (8 >> i), grid[1] * (8 >> i))
            for blk in stage.blocks:
                a = blk.attn
                s = swin_shift(hw, a.window_size, a.shift_size, psm)
                if s and min(hw) <= window:
                    seen.add('small-shifted')
                if s and hw[0] % window:
                    seen.add('padded-shifted')
                if not s and a.shift_size and min(hw) <= window:
                    seen.add('small-unshifted')
    assert seen == {'small-shifted', 'padded-shifted', 'small-unshifted'}
