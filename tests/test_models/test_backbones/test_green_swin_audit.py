"""GreenSwinTransformer's masked path against an independent dense
reference (tests/test_models/reference), in float64: every visible token of
all four stages, the gradient of every parameter and of the image."""
import pytest
import torch
from mmpretrain.models import SwinTransformer
from reference import (own_relative_position_index, swin_reference,
                       swin_reference_maps, valid_map)
from reference.compare import assert_close64, audit, twin_copies

from greenmim_mm.models import GreenSwinTransformer

SMALL = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])


def _cfg(arch=SMALL, window=7, **kw):
    return dict(arch=arch, window_size=window, out_indices=(0, 1, 2, 3),
                drop_path_rate=0., **kw)


def _pair(seed=0, **kw):
    cfg = _cfg(**kw)
    return twin_copies(lambda: GreenSwinTransformer(**cfg),
                       lambda: SwinTransformer(**cfg), seed)


def _mask(b, grid, n_masked, seed=0):
    """(B, L) bool, a different random mask per sample, n_masked each."""
    gen = torch.Generator().manual_seed(seed)
    L = grid[0] * grid[1]
    return torch.stack([torch.randperm(L, generator=gen) < n_masked
                        for _ in range(b)])


def _img(b, hw, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, *hw, generator=gen, dtype=torch.float64)


def _audit(green, dense, img, mask):
    grid = (img.shape[-2] // 32, img.shape[-1] // 32)
    return audit(green, lambda m, x: m(x, mask), dense,
                 lambda m, x: swin_reference(m, x, mask), img,
                 valid_map(mask, grid, 32))


# --------------------------------------------------------------------------
# the reference itself, against mmpretrain's dense SwinTransformer
# --------------------------------------------------------------------------
@pytest.mark.parametrize('size,window,kw', [
    ((224, 224), 7, {}),
    ((192, 256), 7, dict(pad_small_map=True)),  # padded, small maps shifted
    ((96, 64), 7, dict(pad_small_map=True)),  # every stage below the window
    ((192, 256), 6, dict(use_abs_pos_embed=True)),
    ((384, 288), 12, dict(out_after_downsample=True, pad_small_map=True)),
])
def test_reference_is_dense_swin_when_nothing_is_masked(size, window, kw):
    _, dense = _pair(window=window, **kw)
    img = _img(1, size)
    with torch.no_grad():
        expect = dense(img)
        got = swin_reference_maps(dense, img, block_padding=False)
    assert len(got) == 4
    for e, g in zip(expect, got):
        assert_close64(g, e, 'reference vs mmpretrain', rtol=1e-12)
    for stage in dense.stages:
        for blk in stage.blocks:
            w_msa = blk.attn.w_msa
            assert torch.equal(own_relative_position_index(
                blk.attn.window_size), w_msa.relative_position_index)


# --------------------------------------------------------------------------
# masked path against the reference, float64, forward and every gradient
# --------------------------------------------------------------------------
CASES = {
    'w7-224-r75': (dict(), (224, 224), 2, 37),
    'w7-192x256-psm-r60': (dict(pad_small_map=True), (192, 256), 2, 29),
    'w12-384-r75': (dict(window=12), (384, 384), 1, 108),
    'w6-192x256-r50': (dict(window=6), (192, 256), 1, 24),
    'w14-448x224-r90': (dict(window=14), (448, 224), 2, 44),
    'w7-96x64-psm-r50': (dict(pad_small_map=True), (96, 64), 3, 3),
    'nothing-masked': (dict(), (224, 224), 1, 0),
    'one-visible-unit': (dict(), (224, 224), 3, 48),
    'one-visible-unit-psm': (dict(pad_small_map=True), (160, 192), 2, 29),
    'abs-pos-embed': (dict(use_abs_pos_embed=True), (224, 256), 2, 42),
    'out-after-downsample': (dict(out_after_downsample=True), (224, 224), 2,
                             30),
}


@pytest.mark.parametrize('name', list(CASES))
def test_masked_path_equals_reference(name):
    kw, size, b, n_masked = CASES[name]
    green, dense = _pair(**kw)
    grid = (size[0] // 32, size[1] // 32)
    mask = _mask(b, grid, n_masked, seed=len(name))
    _audit(green, dense, _img(b, size), mask)


def test_batch_of_8_different_masks():
    green, dense = _pair()
    mask = _mask(8, (7, 7), 37, seed=3)
    assert len({tuple(m.tolist()) for m in mask}) == 8
    img = _img(8, (224, 224))
    outs = _audit(green, dense, img, mask)
    # each sample's tokens depend on its own image and mask only
    with torch.no_grad():
        alone = green(img[5:6], mask[5:6])
    for o, a in zip(outs, alone):
        assert_close64(o[5:6], a, 'sample 5 alone')


@pytest.mark.parametrize('size,window', [((224, 224), 7), ((448, 448), 7),
                                         ((256, 256), 8)])
def test_nothing_masked_equals_mmpretrain_swin(size, window):
    """Stage maps are multiples of the window (no padding): the masked path
    with nothing masked is mmpretrain's dense Swin, token for token."""
    from reference import pick_tokens
    green, dense = _pair(window=window)
    grid = (size[0] // 32, size[1] // 32)
    img = _img(1, size)
    mask = torch.zeros(1, grid[0] * grid[1], dtype=torch.bool)
    with torch.no_grad():
        got = green(img, mask)
        expect = dense(img)
    for g, e in zip(got, expect):
        assert_close64(g, pick_tokens(e, mask, grid), 'vs dense Swin')


@pytest.mark.slow
@pytest.mark.parametrize('arch,window,size,n_masked', [
    ('tiny', 7, (224, 224), 37),
    ('tiny', 12, (384, 384), 108),
    ('tiny', 6, (192, 256), 24),
    ('base', 7, (128, 128), 10),
    ('base', 14, (224, 224), 37),
])
def test_real_archs_equal_reference(arch, window, size, n_masked):
    green, dense = _pair(arch=arch, window=window)
    grid = (size[0] // 32, size[1] // 32)
    _audit(green, dense, _img(1, size), _mask(1, grid, n_masked))


# --------------------------------------------------------------------------
# negative controls: a broken reference must differ from the masked path
# --------------------------------------------------------------------------
def test_broken_references_differ_from_masked_path():
    green, dense = _pair(pad_small_map=True)
    img = _img(2, (192, 256))
    mask = _mask(2, (6, 8), 30)
    with torch.no_grad():
        outs = green(img, mask)
        good = swin_reference(dense, img, mask)
        row = swin_reference(dense, img, mask, order='row')
        leaky = swin_reference(dense, img, mask, block_masked=False)
        padded = swin_reference(dense, img, mask, block_padding=False)
    for i in range(2):  # side 2 and 1: row-major is Z order
        assert_close64(outs[i], good[i], 'good reference')
        assert (outs[i] - row[i]).abs().max() > 1e-3, 'row-major order'
    for i in range(4):
        assert (outs[i] - leaky[i]).abs().max() > 1e-3, 'unblocked keys'
        assert (outs[i] - padded[i]).abs().max() > 1e-3, 'unblocked padding'


# --------------------------------------------------------------------------
# execution modes that must not change a single bit
# --------------------------------------------------------------------------
def _grads(model, img, mask, weights):
    model.zero_grad(set_to_none=True)
    x = img.clone().requires_grad_(True)
    outs = model(x, mask)
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    return outs, {n: p.grad for n, p in model.named_parameters()}, x.grad


def _assert_bitwise(a, b):
    (oa, ga, ia), (ob, gb, ib) = a, b
    for x, y in zip(oa, ob):
        assert torch.equal(x, y)
    assert ga.keys() == gb.keys()
    for n in ga:
        assert (ga[n] is None) == (gb[n] is None), n
        assert ga[n] is None or torch.equal(ga[n], gb[n]), n
    assert torch.equal(ia, ib)


def test_with_cp_is_bitwise_equal_to_without():
    green, _ = _pair()
    cp_green, _ = _pair(with_cp=True)
    cp_green.train()
    green.train()
    img, mask = _img(2, (224, 224)), _mask(2, (7, 7), 37)
    weights = [torch.randn(2, n, c, dtype=torch.float64) for n, c in
               [(12 * 64, 16), (12 * 16, 32), (12 * 4, 64), (12, 128)]]
    _assert_bitwise(_grads(green, img, mask, weights),
                    _grads(cp_green, img, mask, weights))
    assert cp_green.stages[0].blocks[0].with_cp


def test_train_mode_with_zero_drop_rates_is_bitwise_eval():
    green, _ = _pair(drop_rate=0., use_abs_pos_embed=True)
    img, mask = _img(2, (224, 224)), _mask(2, (7, 7), 37)
    weights = [torch.randn(2, n, c, dtype=torch.float64) for n, c in
               [(12 * 64, 16), (12 * 16, 32), (12 * 4, 64), (12, 128)]]
    green.eval()
    ev = _grads(green, img, mask, weights)
    green.train()
    assert green.training
    _assert_bitwise(_grads(green, img, mask, weights), ev)
