import torch

from greenmim_mm.models import GreenMIMDecoder
from greenmim_mm.models.utils import random_unit_mask, restore_ids


def test_decoder_places_visible_tokens_at_their_units():
    torch.manual_seed(0)
    dec = GreenMIMDecoder(in_channels=8, embed_dims=16, depth=0,
                          num_heads=2, unit_size=4)
    dec.init_weights()
    mask = random_unit_mask(2, (3, 5), 0.6)
    n_vis = int((~mask[0]).sum())
    x = torch.randn(2, n_vis, 8)
    out = dec(x, restore_ids(mask), (3, 5))
    assert out.shape == (2, 15, 4 * 4 * 3)
    # with no blocks, masked units share one prediction modulo position;
    # moving a visible token changes only its own unit's output
    x2 = x.clone()
    x2[:, 0] += 1.0
    diff = (dec(x2, restore_ids(mask), (3, 5)) - out).abs().sum(-1)
    first_vis = (~mask).float().argmax(1)
    for b in range(2):
        changed = (diff[b] > 1e-6).nonzero().flatten().tolist()
        assert changed == [int(first_vis[b])]
