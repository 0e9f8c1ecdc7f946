"""GreenConvNeXt (V1, V2): masked path against the dense parent and an
independent dense reference that zeroes masked tokens before every conv."""
import pytest
import torch
from mmpretrain.models import ConvNeXt

from greenmim_mm.models.backbones import GreenConvNeXt
from greenmim_mm.models.utils.masking import (random_unit_mask,
                                              token_coords,
                                              visible_unit_ids)

SMALL = dict(depths=[1, 1, 2, 1], channels=[8, 16, 24, 32])
KINDS = {
    'v1': dict(layer_scale_init_value=1e-6),
    'v2': dict(use_grn=True, layer_scale_init_value=0.),
    'v2_conv_pw': dict(use_grn=True, layer_scale_init_value=0.,
                       linear_pw_conv=False),
}


def build(kind='v2', arch=SMALL, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(KINDS[kind], out_indices=(0, 1, 2, 3),
               gap_before_final_norm=False)
    cfg.update(kw)
    model = GreenConvNeXt(arch, **cfg)
    model.init_weights()
    with torch.no_grad():  # GRN gamma/beta start at 0, layer scale 1e-6:
        for p in model.parameters():  # make every parameter matter
            p.add_(torch.randn_like(p) * 0.3)
    return model.to(dtype)


def visible_rows(dense_map, vis, grid_w, levels):
    """(B, C, H, W) -> (B, N, C) at the visible tokens, unit then Morton."""
    rc = token_coords(vis, grid_w, levels)  # (B, N, 2)
    b = torch.arange(rc.shape[0])[:, None]
    return dense_map.permute(0, 2, 3, 1)[b, rc[..., 0], rc[..., 1]]


def dense_reference(model, x, mask, grid):
    """The dense ConvNeXt modules, with the map's masked positions zeroed
    before every conv and before GRN (whose norm then spans the visible
    tokens only): FCMAE's sparse semantics, computed densely."""
    b = x.shape[0]
    keep = (~mask).to(x.dtype).view(b, 1, *grid)  # (B, 1, Hu, Wu)

    def zero(t):
        f = t.shape[-1] // grid[1]
        return t * keep.repeat_interleave(f, 2).repeat_interleave(f, 3)

    outs = []
    for i, stage in enumerate(model.stages):
        layer = model.downsample_layers[i]
        if i == 0:
            x = layer[1](layer[0](zero(x)))
        else:
            x = layer[1](zero(layer[0](x)))
        for blk in stage:
            y = blk.depthwise_conv(zero(x))
            if blk.linear_pw_conv:
                y = y.permute(0, 2, 3, 1)
                y = blk.act(blk.pointwise_conv1(
                    blk.norm(y, data_format='channel_last')))
                if blk.grn is not None:
                    y = blk.grn(zero(y.permute(0, 3, 1, 2)))
                    y = y.permute(0, 2, 3, 1)
                y = blk.pointwise_conv2(y).permute(0, 3, 1, 2)
            else:
                y = blk.act(blk.pointwise_conv1(blk.norm(y)))
                if blk.grn is not None:
                    y = blk.grn(zero(y))
                y = blk.pointwise_conv2(y)
            if blk.gamma is not None:
                y = y * blk.gamma.view(1, -1, 1, 1)
            x = x + y
        if i in model.out_indices:
            outs.append(getattr(model, f'norm{i}')(x))
    return outs


def _check(model, x, mask, grid, atol):
    vis = visible_unit_ids(mask)
    xs = x.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    outs = model(xs, mask=mask)
    refs = dense_reference(model, xr, mask, grid)
    torch.manual_seed(1)
    loss_s = loss_r = 0
    for i, (o, r) in enumerate(zip(outs, refs)):
        r = visible_rows(r, vis, grid[1], 3 - i)
        assert o.shape == r.shape
        torch.testing.assert_close(o, r, atol=atol, rtol=atol)
        w = torch.randn_like(o)
        loss_s = loss_s + (o * w).sum()
        loss_r = loss_r + (r * w).sum()
    gs = torch.autograd.grad(loss_s, [xs, *model.parameters()])
    gr = torch.autograd.grad(loss_r, [xr, *model.parameters()])
    names = ['input'] + [n for n, _ in model.named_parameters()]
    for n, a, b in zip(names, gs, gr):
        torch.testing.assert_close(a, b, atol=atol, rtol=atol, msg=n)
    return outs


@pytest.mark.parametrize('kind', sorted(KINDS))
def test_random_masks_match_dense_reference_fwd_and_grads(kind):
    model = build(kind)
    grid = (3, 2)
    x = torch.randn(3, 3, 96, 64, dtype=torch.float64)
    mask = random_unit_mask(3, grid, 0.5, generator=torch.Generator()
                            .manual_seed(2))
    assert len({tuple(m.tolist()) for m in mask}) > 1  # per-sample masks
    _check(model, x, mask, grid, 1e-9)


def test_reference_differs_without_zeroing():
    """The masked path really ignores masked pixels: the plain dense
    network (no zeroing) disagrees at the visible tokens."""
    model = build('v2')
    grid = (2, 2)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]).bool()
    out = model(x, mask=mask)[0]
    dense = visible_rows(model(x)[0], visible_unit_ids(mask), 2, 3)
    assert (out - dense).abs().max() > 1e-3


@pytest.mark.parametrize('dtype,atol', [(torch.float32, 1e-4),
                                        (torch.float64, 1e-10)])
@pytest.mark.parametrize('kind', ['v1', 'v2'])
def test_nothing_masked_equals_dense_parent(kind, dtype, atol):
    model = build(kind, dtype=dtype)
    x = torch.randn(2, 3, 64, 96, dtype=dtype)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    outs = model(x, mask=mask)
    dense = ConvNeXt(SMALL, **KINDS[kind], out_indices=(0, 1, 2, 3),
                     gap_before_final_norm=False).to(dtype)
    dense.load_state_dict(model.state_dict(), strict=True)
    vis = visible_unit_ids(mask)
    for i, (o, d) in enumerate(zip(outs, dense(x))):
        torch.testing.assert_close(o, visible_rows(d, vis, 3, 3 - i),
                                   atol=atol, rtol=atol)


@pytest.mark.parametrize('kind', ['v1', 'v2'])
def test_dense_forward_is_the_parents(kind):
    model = build(kind, dtype=torch.float32, gap_before_final_norm=True,
                  out_indices=-1)
    dense = ConvNeXt(SMALL, **KINDS[kind])
    dense.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x)[0], dense(x)[0], atol=0, rtol=0)


@pytest.mark.parametrize('arch', ['tiny', 'base'])
def test_state_dict_round_trips_with_mmpretrain(arch):
    kw = dict(use_grn=True, layer_scale_init_value=0.)
    green = GreenConvNeXt(arch, **kw)
    dense = ConvNeXt(arch, **kw)
    assert list(green.state_dict()) == list(dense.state_dict())
    dense.load_state_dict(green.state_dict(), strict=True)
    green.load_state_dict(dense.state_dict(), strict=True)


def test_checked_pretrained_load(tmp_path):
    src = build('v2', dtype=torch.float32, seed=3)
    ckpt = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in src.state_dict().items()}}, ckpt)
    dst = GreenConvNeXt(SMALL, **KINDS['v2'], out_indices=(0, 1, 2, 3),
                        init_cfg=dict(type='Pretrained', checkpoint=str(ckpt),
                                      prefix='backbone.'))
    dst.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # the same checkpoint into plain mmpretrain ConvNeXt
    plain = ConvNeXt(SMALL, **KINDS['v2'], out_indices=(0, 1, 2, 3),
                     init_cfg=dict(type='Pretrained', checkpoint=str(ckpt),
                                   prefix='backbone.'))
    plain.init_weights()
    assert torch.equal(plain.stages[2][1].grn.gamma,
                       src.stages[2][1].grn.gamma)
    # a checkpoint of another architecture raises, naming the file
    wide = GreenConvNeXt(dict(depths=[1, 1, 2, 1], channels=[8, 16, 24, 40]),
                         **KINDS['v2'],
                         init_cfg=dict(type='Pretrained',
                                       checkpoint=str(ckpt),
                                       prefix='backbone.'))
    with pytest.raises(ValueError, match='ckpt.pth'):
        wide.init_weights()


def test_plans_precomputed_and_drop_path_per_sample():
    model = build('v1', dtype=torch.float32, drop_path_rate=0.5)
    x = torch.randn(4, 3, 64, 64)
    mask = random_unit_mask(4, (2, 2), 0.5)
    plans = model.make_plans(mask, (64, 64))
    model.eval()
    a = model(x, mask=mask, plans=plans)
    b = model(x, mask=mask)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    model.train()  # drop path drops whole samples of (B, N, C) tokens
    torch.manual_seed(0)
    out = model(x, mask=mask)[-1]
    assert torch.isfinite(out).all() and out.shape == (4, 2, 32)


def test_nan_pixel_stays_in_its_sample():
    model = build('v2', dtype=torch.float32)
    x = torch.randn(3, 3, 64, 64)
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0], [0, 0, 1, 1]]).bool()
    clean = model(x, mask=mask)[-1]
    x[1, :, 0, 0] = float('nan')  # a visible pixel of sample 1
    out = model(x, mask=mask)[-1]
    assert torch.isnan(out[1]).all()
    torch.testing.assert_close(out[[0, 2]], clean[[0, 2]])


def test_bf16_autocast_is_close_to_fp32():
    model = build('v2', dtype=torch.float32)
    x = torch.randn(2, 3, 64, 64)
    mask = random_unit_mask(2, (2, 2), 0.5)
    ref = model(x, mask=mask)[-1]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x, mask=mask)[-1]
    out.float().sum().backward()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match='Unknown GreenConvNeXt arch'):
        GreenConvNeXt('tinyy')
    with pytest.raises(ValueError, match='no grouped or depthwise'):
        GreenConvNeXt(SMALL, sparse_conv_backend='spconv')
    model = build('v2', dtype=torch.float32)
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match='multiple of the mask unit'):
        model(torch.randn(2, 3, 48, 64), mask=torch.zeros(2, 4))
    with pytest.raises(ValueError, match='no visible unit'):
        model(x, mask=torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]]))
    pooled = build('v2', dtype=torch.float32, gap_before_final_norm=True)
    with pytest.raises(ValueError, match='gap_before_final_norm=False'):
        pooled(x, mask=torch.zeros(2, 4))
    other = model.make_plans(torch.tensor([[0, 0, 1, 1]] * 2), (64, 64))
    with pytest.raises(ValueError, match='another mask'):
        model(x, mask=torch.tensor([[0, 1, 1, 1]] * 2), plans=other)


def test_sparse_grn_matches_mmpretrain_grn_even_for_a_zero_channel():
    from mmpretrain.models.utils import GRN

    from greenmim_mm.models.backbones import sparse_grn
    grn = GRN(6).double()
    with torch.no_grad():
        grn.gamma.normal_()
        grn.beta.normal_()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    x[:, :, 2] = 0  # a channel that is zero at every token
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = sparse_grn(grn, xa)
    yb = grn(xb[:, :, None], data_format='channel_last')[:, :, 0]
    torch.testing.assert_close(ya, yb, atol=1e-12, rtol=1e-12)
    w = torch.randn_like(ya)
    ga = torch.autograd.grad((ya * w).sum(), [xa, grn.gamma, grn.beta])
    gb = torch.autograd.grad((yb * w).sum(), [xb, grn.gamma, grn.beta])
    for name, a, b in zip(['x', 'gamma', 'beta'], ga, gb):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12, msg=name)
    assert ga[0][:, :, 2].abs().max() > 0  # the identity path still flows
