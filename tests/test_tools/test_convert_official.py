"""tools/convert_official.py on synthetic checkpoints in the authors' layout
(github LayneH/GreenMIM: models_swin.py 2022, modeling/ 2023): the three
released models in their three file forms, a float64 functional reference
of the authors' Swin (LayerNorm eps 1e-6, per-stage windows, both merge
orders), and strict loading into the shipped configs."""
import argparse
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

import greenmim_mm  # noqa: F401
from convert_official import (RELEASED, ConvertError, convert, convert_file,
                              main)
from greenmim_mm.utils_io import OverwriteInputError

CFG = osp.join(osp.dirname(__file__), '..', '..', 'configs')


def paper_state(embed, depths, heads, window, res=56, fill=None,
                dtype=torch.float32, decoder=True):
    """State dict of the authors' MaskedAutoencoder: ``encoder.`` Swin (its
    windows clipped to maps no larger than them), decoder. ``fill=None``
    gives zero-stride tensors (full shapes, no memory)."""
    def t(*shape):
        if fill is None:
            return torch.zeros(1, dtype=dtype).expand(*shape)
        return torch.randn(*shape, generator=fill, dtype=dtype) * 0.2

    out = {'encoder.patch_embed.proj.weight': t(embed, 3, 4, 4),
           'encoder.patch_embed.proj.bias': t(embed),
           'encoder.patch_embed.norm.weight': t(embed) + 1,
           'encoder.patch_embed.norm.bias': t(embed)}
    for i, (d, h) in enumerate(zip(depths, heads)):
        c, r = embed * 2**i, res >> i
        w = min(window, r) if r <= window else window
        for j in range(d):
            p = f'encoder.layers.{i}.blocks.{j}.'
            out.update({
                p + 'norm1.weight': t(c) + 1, p + 'norm1.bias': t(c),
                p + 'attn.relative_position_bias_table':
                t((2 * w - 1)**2, h),
                p + 'attn.relative_position_index':
                torch.zeros(1, dtype=torch.long).expand(w * w, w * w),
                p + 'attn.qkv.weight': t(3 * c, c), p + 'attn.qkv.bias':
                t(3 * c), p + 'attn.proj.weight': t(c, c),
                p + 'attn.proj.bias': t(c), p + 'norm2.weight': t(c) + 1,
                p + 'norm2.bias': t(c), p + 'mlp.fc1.weight': t(4 * c, c),
                p + 'mlp.fc1.bias': t(4 * c), p + 'mlp.fc2.weight':
                t(c, 4 * c), p + 'mlp.fc2.bias': t(c)})
        if i < len(depths) - 1:
            p = f'encoder.layers.{i}.downsample.'
            out.update({p + 'reduction.weight': t(2 * c, 4 * c),
                        p + 'norm.weight': t(4 * c) + 1,
                        p + 'norm.bias': t(4 * c)})
    c = embed * 2**(len(depths) - 1)
    out['encoder.norm.weight'], out['encoder.norm.bias'] = t(c) + 1, t(c)
    if decoder:
        out.update({'mask_token': t(1, 1, 512), 'decoder_embed.weight':
                    t(512, c), 'decoder_embed.bias': t(512),
                    'decoder_pos_embed': t(1, 49, 512),
                    'decoder_blocks.0.attn.qkv.weight': t(1536, 512),
                    'decoder_norm.weight': t(512),
                    'decoder_pred.weight': t(3072, 512)})
    return out


def released_state(name, **kw):
    s = RELEASED[name]
    return paper_state(s['embed_dims'], s['depths'], s['num_heads'],
                       s['windows'][0], **kw)


def write_form(path, state, form, model_name=None):
    """The three forms the authors' code writes."""
    if form == 'released':
        obj = {'model': state}
    elif form == 'raw':
        obj = {'model': state, 'epoch': 799, 'scaler': {
            'scale': 65536.0, 'growth_factor': 2.0, 'backoff_factor': 0.5,
            'growth_interval': 2000, '_growth_tracker': 17},
            'optimizer': {'state': {0: {
                'step': torch.tensor(1000.), 'exp_avg': torch.zeros(3),
                'exp_avg_sq': torch.zeros(3)}}, 'param_groups': [dict(
                    lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05,
                    amsgrad=False, foreach=None, params=[0])]},
            'args': argparse.Namespace(model=model_name, blr=1.5e-4,
                                       mask_ratio=0.75, norm_pix_loss=True)}
    else:  # extract_backbone.py: bare encoder, no index buffers
        obj = {k[len('encoder.'):]: v for k, v in state.items()
               if k.startswith('encoder.')
               and 'relative_position_index' not in k}
    torch.save(obj, path)


@pytest.mark.parametrize('name', sorted(RELEASED))
@pytest.mark.parametrize('form', ['released', 'raw', 'extracted'])
def test_every_released_model_converts_and_is_named(tmp_path, name, form,
                                                    capsys):
    if name == 'swin-large-w14' and form != 'raw':
        pytest.skip('Swin-L: the raw form covers it (model build is slow)')
    src, dst = tmp_path / 'official.pth', tmp_path / 'out.pth'
    write_form(src, released_state(name), form,
               RELEASED[name]['paper_2022'])
    assert main([str(src), str(dst)]) == 0
    log = capsys.readouterr().out
    assert f'detected: {name}' in log
    out = torch.load(dst, weights_only=True)
    meta = out['meta']
    assert meta['model'] == name
    assert meta['window_sizes'] == list(RELEASED[name]['windows'])
    assert meta['layer_norm_eps'] == 1e-6 and meta['merge_order'] == 'row'
    table = out['state_dict'][
        'stages.3.blocks.0.attn.w_msa.relative_position_bias_table']
    assert table.shape[0] == (2 * RELEASED[name]['windows'][3] - 1)**2


def test_wrong_model_and_bad_files_are_refused(tmp_path, capsys):
    src = tmp_path / 'b7.pth'
    write_form(src, released_state('swin-base-w7'), 'released')
    with pytest.raises(ConvertError, match=r'b7\.pth holds swin-base-w7.*'
                       r'not the requested swin-base-w14'):
        convert_file(str(src), str(tmp_path / 'o.pth'), 'swin-base-w14')
    # args naming another model than the weights
    raw = tmp_path / 'raw.pth'
    write_form(raw, released_state('swin-base-w7'), 'raw',
               RELEASED['swin-base-w14']['paper'])
    with pytest.raises(ConvertError, match=r'raw\.pth: its args name'):
        convert_file(str(raw), str(tmp_path / 'o.pth'))
    # never the input, also through main (exit 1, message, file intact)
    before = src.read_bytes()
    with pytest.raises(OverwriteInputError):
        convert_file(str(src), str(src))
    assert main([str(src), str(src)]) == 1
    assert 'refusing to overwrite' in capsys.readouterr().err
    assert src.read_bytes() == before
    # an mmengine checkpoint and foreign keys name the file
    mm = tmp_path / 'mm.pth'
    torch.save({'state_dict': {'backbone.x': torch.ones(1)}}, mm)
    with pytest.raises(ConvertError, match=r'mm\.pth: an mmengine'):
        convert_file(str(mm), str(tmp_path / 'o.pth'))
    twins = tmp_path / 'twins.pth'
    torch.save({'model': {'encoder.patch_embeds.0.proj.weight':
                          torch.ones(1)}}, twins)
    with pytest.raises(ConvertError, match=r'twins\.pth.*not in the '
                       'official'):
        convert_file(str(twins), str(tmp_path / 'o.pth'))
    assert not (tmp_path / 'o.pth').exists()


# --- functional reference of the authors' Swin, float64 -----------------
def _ln(x, sd, p, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + '.weight'], sd[p + '.bias'],
                        eps)


def paper_forward(sd, x, window, depths, heads, eps, merge_order):
    """Dense forward of the authors' encoder on its own state dict."""
    g = lambda k: sd['encoder.' + k]  # noqa: E731
    x = F.conv2d(x, g('patch_embed.proj.weight'), g('patch_embed.proj.bias'),
                 stride=4).permute(0, 2, 3, 1)  # (B, H, W, C)
    x = _ln(x, sd, 'encoder.patch_embed.norm', eps)
    for i, (d, nh) in enumerate(zip(depths, heads)):
        B, H, W, C = x.shape
        w = min(H, window) if H <= window else window
        for j in range(d):
            p = f'encoder.layers.{i}.blocks.{j}.'
            s = 0 if (H <= window or j % 2 == 0) else window // 2
            # window id of each (shifted) position: bands, no wrap
            band = (torch.arange(H) + (w - s) % w) // w
            wid = band[:, None] * (H // w + 1) + band[None, :]
            y = _ln(x, sd, p + 'norm1', eps).reshape(B, H * W, C)
            q, k, v = F.linear(y, sd[p + 'attn.qkv.weight'],
                               sd[p + 'attn.qkv.bias']).reshape(
                                   B, H * W, 3, nh, C // nh).permute(
                                       2, 0, 3, 1, 4)
            rc = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W),
                                            indexing='ij'), -1).reshape(-1, 2)
            rel = rc[:, None] - rc[None] + w - 1  # (N, N, 2)
            idx = (rel[..., 0] * (2 * w - 1) + rel[..., 1]).clamp(
                0, (2 * w - 1)**2 - 1)
            bias = sd[p + 'attn.relative_position_bias_table'][idx]
            same = wid.reshape(-1)[:, None] == wid.reshape(-1)[None]
            attn = (q * (C // nh)**-0.5) @ k.transpose(-2, -1)
            attn = attn + bias.permute(2, 0, 1)
            attn = attn.masked_fill(~same, float('-inf')).softmax(-1)
            y = (attn @ v).transpose(1, 2).reshape(B, H * W, C)
            y = F.linear(y, sd[p + 'attn.proj.weight'],
                         sd[p + 'attn.proj.bias'])
            x = x + y.reshape(B, H, W, C)
            y = F.gelu(F.linear(_ln(x, sd, p + 'norm2', eps),
                                sd[p + 'mlp.fc1.weight'],
                                sd[p + 'mlp.fc1.bias']))
            x = x + F.linear(y, sd[p + 'mlp.fc2.weight'],
                             sd[p + 'mlp.fc2.bias'])
        if i < len(depths) - 1:
            pos = [(0, 0), (1, 0), (0, 1), (1, 1)] if merge_order == 'swin' \
                else [(0, 0), (0, 1), (1, 0), (1, 1)]
            x = torch.cat([x[:, r::2, c::2] for r, c in pos], -1)
            p = f'encoder.layers.{i}.downsample.'
            x = F.linear(_ln(x, sd, p + 'norm', eps),
                         sd[p + 'reduction.weight'])
    return _ln(x, sd, 'encoder.norm', eps)  # (B, 7, 7, C)


@pytest.mark.parametrize('merge_order', ['row', 'swin'])
def test_converted_model_matches_the_authors_forward_with_eps_1e6(
        tmp_path, merge_order):
    """w14 layout (last stage window 7) and the shipped config's backbone
    settings: exact in float64 with eps 1e-6, not with mmpretrain's 1e-5."""
    from mmpretrain.registry import MODELS
    depths, heads = (2, 2, 2, 2), (1, 2, 2, 4)
    gen = torch.Generator().manual_seed(0)
    sd = paper_state(8, depths, heads, 14, fill=gen, dtype=torch.float64)
    src, dst = tmp_path / 'o.pth', tmp_path / 'c.pth'
    torch.save({'model': sd}, src)
    meta = convert_file(str(src), str(dst), prefix='backbone.',
                        merge_order=merge_order)
    assert meta['window_sizes'] == [14, 14, 14, 7] and meta['model'] is None
    cfg = Config.fromfile(osp.join(
        CFG, 'benchmarks',
        'greenmim_swin-base-w14_8xb256-amp-coslr-100e_in1k.py'))
    x = torch.randn(2, 3, 224, 224, generator=gen, dtype=torch.float64)
    ref = paper_forward(sd, x, 14, depths, heads, 1e-6, merge_order)
    outs = {}
    for eps in (1e-6, 1e-5):
        bb = cfg.model.backbone.copy()
        bb.update(arch=dict(embed_dims=8, depths=list(depths),
                            num_heads=list(heads)), drop_path_rate=0.0)
        bb.init_cfg.checkpoint = str(dst)
        if eps != 1e-6:
            for k in ('norm_cfg', 'patch_cfg', 'stage_cfgs'):
                bb.pop(k)
            bb.stage_cfgs = [{}, {}, {}, dict(window_size=7)]
        model = MODELS.build(bb)
        model.double()
        model.init_weights()  # the checked Pretrained path, strict
        model.eval()
        with torch.no_grad():
            outs[eps] = model(x)[-1].permute(0, 2, 3, 1)
    torch.testing.assert_close(outs[1e-6], ref, rtol=1e-9, atol=1e-10)
    assert (outs[1e-5] - ref).abs().max() > 1e-7  # eps matters


@pytest.mark.parametrize('cfg_name', [
    'benchmarks/greenmim_swin-base-w14_8xb256-amp-coslr-100e_in1k.py',
    'mmdet/mask-rcnn_greenmim-swin-base-w14_fpn_1x_coco.py'])
def test_released_b14_loads_strictly_into_shipped_configs(tmp_path,
                                                          cfg_name):
    from mmengine.registry import DefaultScope
    src, dst = tmp_path / 'b14.pth', tmp_path / 'b14_mm.pth'
    gen = torch.Generator().manual_seed(1)
    write_form(src, released_state('swin-base-w14', fill=gen), 'extracted')
    assert main([str(src), str(dst), '--model', 'swin-base-w14',
                 '--prefix', 'backbone.']) == 0
    cfg = Config.fromfile(osp.join(CFG, cfg_name))
    cfg.model.backbone.init_cfg.checkpoint = str(dst)
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        bb = cfg.model.backbone.copy()
        bb.type = bb.type.split('.')[-1]
        model = MODELS.build(bb)
    model.init_weights()
    got = model.state_dict()
    want = torch.load(dst, weights_only=True)['state_dict']
    # detection outputs every stage: norm0-2 are new (the paper has only
    # the final norm) and keep their init; nothing else is missing
    extra = set(got) - {k[len('backbone.'):] for k in want}
    assert extra == (set() if 'mmdet' not in cfg_name else {
        f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')})
    for k, v in want.items():
        assert torch.equal(got[k[len('backbone.'):]], v), k


def test_green_swin_per_stage_windows_masked_path_equals_dense():
    """The w14 layout (last stage window 7, via stage_cfgs) on
    GreenSwinTransformer: the masked path with nothing masked equals dense
    mmpretrain, forward and every gradient, in float64."""
    from mmpretrain.models import SwinTransformer

    from greenmim_mm.models.backbones import GreenSwinTransformer
    kw = dict(arch=dict(embed_dims=8, depths=[2, 2, 2, 2],
                        num_heads=[1, 2, 2, 4]), window_size=14,
              stage_cfgs=[{}, {}, {}, dict(window_size=7)],
              out_indices=(3, ), drop_path_rate=0.0)
    torch.manual_seed(0)
    green = GreenSwinTransformer(**kw).double()
    dense = SwinTransformer(**kw).double()
    dense.load_state_dict(green.state_dict())
    assert [b.attn.window_size for b in green.stages[3].blocks] == [7, 7]
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    mask = torch.zeros(2, 49)  # nothing masked
    out_g = green(x, mask=mask)[-1]  # (B, 49, C) visible tokens
    out_d = dense(x)[-1].flatten(2).transpose(1, 2)  # (B, 49, C)
    torch.testing.assert_close(out_g, out_d, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(out_d)
    (out_g * w).sum().backward()
    (out_d * w).sum().backward()
    for (n, pg), (_, pd) in zip(green.named_parameters(),
                                dense.named_parameters()):
        torch.testing.assert_close(pg.grad, pd.grad, rtol=1e-9, atol=1e-10,
                                   msg=n)
