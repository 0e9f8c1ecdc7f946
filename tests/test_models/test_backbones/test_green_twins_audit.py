"""GreenPCPVT / GreenSVT masked path against an independent dense reference
(tests/test_models/reference/twins_dense.py) in float64: every visible
token of all four stages, the gradient of every parameter and of the
image."""
from functools import partial

import pytest
import torch
from mmpretrain.models import PCPVT, SVT
from reference import (random_images, random_masks, twins_reference,
                       twins_reference_maps, unit_grid)
from reference.compare import (assert_all_close64, assert_bitwise_equal,
                               assert_negative_controls,
                               assert_nothing_masked_is_dense, audit_masked,
                               run_with_grads, twin_copies)

from greenmim_mm.models import GreenPCPVT, GreenSVT

PCPVT_SMALL = dict(embed_dims=[16, 32, 32, 48], depths=[2, 2, 2, 2],
                   num_heads=[1, 2, 2, 4], patch_sizes=[4, 2, 2, 2],
                   strides=[4, 2, 2, 2], mlp_ratios=[2, 2, 2, 2],
                   sr_ratios=[8, 4, 2, 1])
SVT_SMALL = dict(PCPVT_SMALL, window_sizes=[7, 7, 7, 7])
KINDS = {'pcpvt': (GreenPCPVT, PCPVT, PCPVT_SMALL),
         'svt': (GreenSVT, SVT, SVT_SMALL)}


def _pair(kind, arch=None, seed=0, with_cp=False, **kw):
    green_cls, dense_cls, small = KINDS[kind]
    cfg = dict(arch=arch or small, out_indices=(0, 1, 2, 3),
               norm_after_stage=[False, False, True, True], **kw)
    return twin_copies(lambda: green_cls(with_cp=with_cp, **cfg),
                       lambda: dense_cls(**cfg), seed)


def _audit(green, dense, img, mask):
    return audit_masked(green, dense, twins_reference, img, mask)


# --------------------------------------------------------------------------
# the reference itself, against mmpretrain's dense PCPVT / SVT
# --------------------------------------------------------------------------
@pytest.mark.parametrize('kind,size', [
    ('pcpvt', (224, 224)), ('pcpvt', (160, 96)),
    ('svt', (224, 224)),
    ('svt', (256, 224)),  # LSA padding on one side: mmpretrain lets it in
    ('svt', (192, 256)),  # both sides: mmpretrain blocks it
])
def test_reference_is_dense_twins_when_nothing_is_masked(kind, size):
    _, dense = _pair(kind)
    img = random_images(1, size)
    with torch.no_grad():
        expect = dense(img)
        got = twins_reference_maps(dense, img, padding='mmpretrain')
    assert len(got) == 4
    assert_all_close64(got, expect, 'reference vs mmpretrain', rtol=1e-12)


@pytest.mark.parametrize('kind,size', [
    ('pcpvt', (224, 224)), ('pcpvt', (160, 96)),
    ('svt', (224, 224)), ('svt', (224, 448))])
def test_nothing_masked_equals_mmpretrain(kind, size):
    """Stage maps are multiples of the LSA window: the masked path with
    nothing masked is mmpretrain's dense model, token for token."""
    green, dense = _pair(kind)
    assert_nothing_masked_is_dense(green, dense, random_images(1, size))


def test_reference_padding_semantics_matter():
    """Negative control: at 256x224 (stage-0 LSA padded at the bottom only)
    blocking the padding is not what mmpretrain computes."""
    _, dense = _pair('svt')
    img = random_images(1, (256, 224))
    with torch.no_grad():
        expect = dense(img)[0]
        blocked = twins_reference_maps(dense, img, padding='block')[0]
    assert (expect - blocked).abs().max() > 1e-3


# --------------------------------------------------------------------------
# masked path against the reference
# --------------------------------------------------------------------------
CASES = {
    'pcpvt-224-r75': ('pcpvt', (224, 224), 2, 37),
    'pcpvt-160x96-r50': ('pcpvt', (160, 96), 2, 8),
    'pcpvt-one-visible-unit': ('pcpvt', (224, 224), 2, 48),
    'svt-224-r75': ('svt', (224, 224), 2, 37),
    'svt-256x224-r60': ('svt', (256, 224), 2, 34),
    'svt-192x256-r90': ('svt', (192, 256), 2, 43),
    'svt-nothing-masked': ('svt', (224, 224), 1, 0),
    'svt-one-visible-unit': ('svt', (160, 192), 3, 29),
}


@pytest.mark.parametrize('name', list(CASES))
def test_masked_path_equals_reference(name):
    kind, size, b, n_masked = CASES[name]
    green, dense = _pair(kind)
    mask = random_masks(b, unit_grid(size), n_masked, seed=len(name))
    _audit(green, dense, random_images(b, size), mask)


def test_svt_batch_of_8_different_masks():
    green, dense = _pair('svt')
    mask = random_masks(8, (7, 7), 37, seed=5)
    assert len({tuple(m.tolist()) for m in mask}) == 8
    _audit(green, dense, random_images(8, (224, 224)), mask)


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['pcpvt', 'svt'])
def test_real_small_archs_equal_reference(kind):
    green, dense = _pair(kind, arch='small')
    _audit(green, dense, random_images(1, (224, 224)),
           random_masks(1, (7, 7), 37))


def test_broken_references_differ_from_masked_path():
    green, dense = _pair('svt')
    img = random_images(2, (192, 256))
    mask = random_masks(2, (6, 8), 30)
    with torch.no_grad():
        outs = green(img, mask)
        ref = partial(twins_reference, dense, img, mask)
        assert_negative_controls(outs, ref(), {
            # unit side 2 and 1 (stages 2, 3): row-major is Z order
            'row-major order': (ref(order='row'), range(2)),
            'unblocked keys': (ref(block_masked=False), range(4)),
            'open padding': (ref(padding='open'), range(4))})


def test_train_mode_with_zero_drop_rates_is_bitwise_eval():
    green, _ = _pair('svt')
    img, mask = random_images(2, (224, 224)), random_masks(2, (7, 7), 37)
    with torch.no_grad():
        ev = green(img, mask)
        green.train()
        tr = green(img, mask)
    for a, b in zip(ev, tr):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------
# gradient checkpointing must not change a single bit
# --------------------------------------------------------------------------
def _grads_counting_layers(model, img, mask, weights=None):
    """run_with_grads of the masked path, and how often each encoder layer
    ran (twice with checkpointing: forward and recompute)."""
    calls = []
    hooks = [layer.norm1.register_forward_hook(lambda *_: calls.append(1))
             for stage in model.stages for layer in stage]
    try:
        torch.manual_seed(7)  # the same drop-path draws in both models
        res = run_with_grads(model, lambda m, x: m(x, mask), img, weights)
    finally:
        for h in hooks:
            h.remove()
    n_layers = sum(len(stage) for stage in model.stages)
    return res, len(calls) / n_layers


@pytest.mark.parametrize('kind,kw', [
    ('pcpvt', {}), ('svt', {}), ('svt', dict(drop_path_rate=0.3))])
def test_with_cp_is_bitwise_equal_to_without(kind, kw):
    """with_cp=True recomputes every layer in backward (checked: each runs
    twice) and gives the same outputs, parameter gradients and image
    gradient to the bit; with drop path too (the RNG state is replayed)."""
    green, _ = _pair(kind, **kw)
    cp_green, _ = _pair(kind, with_cp=True, **kw)
    green.train()
    cp_green.train()
    img, mask = random_images(2, (224, 224)), random_masks(2, (7, 7), 37)
    plain, runs = _grads_counting_layers(green, img, mask)
    assert runs == 1
    ckpt, cp_runs = _grads_counting_layers(cp_green, img, mask, plain[3])
    assert cp_runs == 2, 'with_cp=True did not recompute the layers'
    assert_bitwise_equal(plain, ckpt)


def test_with_cp_refuses_a_dense_forward_with_gradients():
    """mmpretrain's dense Twins has no checkpointing: with_cp=True must not
    be silently ignored there."""
    green, _ = _pair('svt', with_cp=True)
    img = random_images(1, (224, 224))
    with pytest.raises(NotImplementedError, match='with_cp=True'):
        green(img)
    with torch.no_grad():  # nothing to checkpoint: runs
        assert len(green(img)) == 4
