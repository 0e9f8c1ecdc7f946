"""GreenSwinTransformer's masked path against an independent dense
reference (tests/test_models/reference), in float64: every visible token of
all four stages, the gradient of every parameter and of the image."""
from functools import partial

import pytest
import torch
from mmpretrain.models import SwinTransformer
from reference import (own_relative_position_index, random_images,
                       random_masks, swin_reference, swin_reference_maps,
                       unit_grid)
from reference.compare import (assert_all_close64, assert_bitwise_equal,
                               assert_negative_controls,
                               assert_nothing_masked_is_dense, audit_masked,
                               run_with_grads, twin_copies)

from greenmim_mm.models import GreenSwinTransformer

SMALL = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])


def _cfg(arch=SMALL, window=7, **kw):
    return dict(arch=arch, window_size=window, out_indices=(0, 1, 2, 3),
                drop_path_rate=0., **kw)


def _pair(seed=0, **kw):
    cfg = _cfg(**kw)
    return twin_copies(lambda: GreenSwinTransformer(**cfg),
                       lambda: SwinTransformer(**cfg), seed)


def _audit(green, dense, img, mask):
    return audit_masked(green, dense, swin_reference, img, mask)


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
    img = random_images(1, size)
    with torch.no_grad():
        expect = dense(img)
        got = swin_reference_maps(dense, img, block_padding=False)
    assert len(got) == 4
    assert_all_close64(got, expect, 'reference vs mmpretrain', rtol=1e-12)
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
    mask = random_masks(b, unit_grid(size), n_masked, seed=len(name))
    _audit(green, dense, random_images(b, size), mask)


def test_batch_of_8_different_masks():
    green, dense = _pair()
    mask = random_masks(8, (7, 7), 37, seed=3)
    assert len({tuple(m.tolist()) for m in mask}) == 8
    img = random_images(8, (224, 224))
    outs = _audit(green, dense, img, mask)
    # each sample's tokens depend on its own image and mask only
    with torch.no_grad():
        alone = green(img[5:6], mask[5:6])
    assert_all_close64([o[5:6] for o in outs], alone, 'sample 5 alone')


@pytest.mark.parametrize('size,window', [((224, 224), 7), ((448, 448), 7),
                                         ((256, 256), 8)])
def test_nothing_masked_equals_mmpretrain_swin(size, window):
    """Stage maps are multiples of the window (no padding): the masked path
    with nothing masked is mmpretrain's dense Swin, token for token."""
    green, dense = _pair(window=window)
    assert_nothing_masked_is_dense(green, dense, random_images(1, size))


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
    _audit(green, dense, random_images(1, size),
           random_masks(1, unit_grid(size), n_masked))


# --------------------------------------------------------------------------
# negative controls: a broken reference must differ from the masked path
# --------------------------------------------------------------------------
def test_broken_references_differ_from_masked_path():
    green, dense = _pair(pad_small_map=True)
    img = random_images(2, (192, 256))
    mask = random_masks(2, (6, 8), 30)
    with torch.no_grad():
        outs = green(img, mask)
        ref = partial(swin_reference, dense, img, mask)
        assert_negative_controls(outs, ref(), {
            # unit side 2 and 1 (stages 2, 3): row-major is Z order
            'row-major order': (ref(order='row'), range(2)),
            'unblocked keys': (ref(block_masked=False), range(4)),
            'unblocked padding': (ref(block_padding=False), range(4))})


# --------------------------------------------------------------------------
# execution modes that must not change a single bit
# --------------------------------------------------------------------------
def _grads(model, img, mask, weights=None):
    return run_with_grads(model, lambda m, x: m(x, mask), img, weights)


def test_with_cp_is_bitwise_equal_to_without():
    green, _ = _pair()
    cp_green, _ = _pair(with_cp=True)
    cp_green.train()
    green.train()
    img, mask = random_images(2, (224, 224)), random_masks(2, (7, 7), 37)
    plain = _grads(green, img, mask)
    assert_bitwise_equal(plain, _grads(cp_green, img, mask, plain[3]))
    assert cp_green.stages[0].blocks[0].with_cp


def test_train_mode_with_zero_drop_rates_is_bitwise_eval():
    green, _ = _pair(drop_rate=0., use_abs_pos_embed=True)
    img, mask = random_images(2, (224, 224)), random_masks(2, (7, 7), 37)
    green.eval()
    ev = _grads(green, img, mask)
    green.train()
    assert green.training
    assert_bitwise_equal(_grads(green, img, mask, ev[3]), ev)
