import pytest
import torch
from mmcv.cnn.bricks.transformer import PatchMerging
from mmpretrain.models import SwinTransformer
from mmpretrain.registry import MODELS

import greenmim_mm  # noqa: F401
from convert_official import (check_against, convert,
                              merge_order_to_unfold)
from extract_backbone import extract
from extract_backbone import main as extract_main


def _unfold_to_merge_order(t):
    c = t.shape[-1] // 4
    out = torch.empty_like(t)
    for pos, k in enumerate([0, 2, 1, 3]):  # concat pos -> unfold slot
        out[..., pos * c:(pos + 1) * c] = t[..., k::4]
    return out


def _official_from(model):
    """Write a SwinTransformer's weights in the authors' layout."""
    rules = {
        'attn.w_msa.qkv': 'attn.qkv', 'attn.w_msa.proj': 'attn.proj',
        'attn.w_msa.relative_position_bias_table':
        'attn.relative_position_bias_table',
        'attn.w_msa.relative_position_index': 'attn.relative_position_index',
        'ffn.layers.0.0': 'mlp.fc1', 'ffn.layers.1': 'mlp.fc2'
    }
    out = {}
    for k, v in model.state_dict().items():
        n = k.replace('stages.', 'layers.').replace(
            'patch_embed.projection', 'patch_embed.proj').replace(
                'norm3.', 'norm.')
        for a, b in rules.items():
            n = n.replace(a, b)
        if 'downsample' in n:
            v = _unfold_to_merge_order(v)
        out['encoder.' + n] = v.clone()
    out['encoder.layers.0.blocks.1.attn_mask'] = torch.zeros(64, 49, 49)
    out['decoder_embed.weight'] = torch.zeros(4, 4)
    out['mask_token'] = torch.zeros(1, 1, 4)
    return out


def test_converter_round_trips_official_layout():
    torch.manual_seed(0)
    model = SwinTransformer(arch='tiny')
    converted, skipped = convert(_official_from(model))
    assert sorted(skipped) == ['decoder_embed.weight', 'mask_token']
    assert set(converted) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(converted[k], v), k
    check_against(converted, 'tiny', 7)


def test_merge_reorder_matches_swin_concat_merging():
    torch.manual_seed(0)
    c = 6
    merge = PatchMerging(c, 2 * c)
    x = torch.randn(2, 4, 4, c)
    x0, x1 = x[:, 0::2, 0::2], x[:, 1::2, 0::2]
    x2, x3 = x[:, 0::2, 1::2], x[:, 1::2, 1::2]
    cat = torch.cat([x0, x1, x2, x3], -1).view(2, 4, 4 * c)  # Swin's order
    w = torch.randn(2 * c, 4 * c)
    g, b = torch.randn(4 * c), torch.randn(4 * c)
    official = torch.nn.functional.layer_norm(cat, (4 * c, ), g, b) @ w.T
    with torch.no_grad():
        merge.reduction.weight.copy_(merge_order_to_unfold(w))
        merge.norm.weight.copy_(merge_order_to_unfold(g))
        merge.norm.bias.copy_(merge_order_to_unfold(b))
        ours, _ = merge(x.view(2, 16, c), (4, 4))
    torch.testing.assert_close(ours, official)


def test_converter_rejects_unknown_keys_and_shapes():
    state = _official_from(SwinTransformer(arch='tiny'))
    with pytest.raises(KeyError, match='not in the official'):
        convert({**state, 'encoder.layers.0.blocks.0.attn.foo': torch.ones(1)})
    with pytest.raises(KeyError, match='not in the official'):
        convert({**state, 'head.weight': torch.ones(1)})
    converted, _ = convert(state)
    with pytest.raises(ValueError, match='shape mismatches'):
        check_against(converted, 'small', 7)  # small has 18 blocks
    bad = dict(converted)
    bad['patch_embed.projection.weight'] = torch.zeros(96, 3, 8, 8)
    with pytest.raises(ValueError, match='patch_embed.projection.weight'):
        check_against(bad, 'tiny', 7)


def test_extracted_backbone_loads_strictly_with_weights_only(tmp_path):
    model = MODELS.build(
        dict(type='GreenMIM',
             backbone=dict(type='GreenSwinTransformer', arch='tiny'),
             neck=dict(type='GreenMIMDecoder', in_channels=768),
             head=dict(type='GreenMIMHead')))
    src = tmp_path / 'pretrain.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 3}},
               src)
    dst = tmp_path / 'backbone.pth'
    extract_main([str(src), str(dst)])
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    swin = SwinTransformer(arch='tiny')
    swin.load_state_dict(ckpt['state_dict'], strict=True)
    for k, v in swin.state_dict().items():
        assert torch.equal(v, model.backbone.state_dict()[k])
    with pytest.raises(KeyError, match='No "backbone." weights'):
        extract({'encoder.x': torch.ones(1)})
