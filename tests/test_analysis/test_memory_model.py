"""memory_model against hand counts of tiny modules (fp16 autocast on fake
CUDA tensors), views deduplicated, and the attention kernel's saves."""
import torch
import torch.nn.functional as F
from torch import nn

from greenmim_mm.analysis import memory_model
from greenmim_mm.analysis.memory_model import WEIGHT_CAST, reduction


class Tiny(nn.Module):
    """x (4, 8) -> linear (8 -> 16, no bias) -> relu -> two halves
    multiplied (both views of the relu output)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 16, bias=False)

    def forward(self, x):
        y = torch.relu(self.lin(x))  # (4, 16); relu saves its result
        return (y[:2] * y[2:]).sum()  # mul saves both views of y


def _fwd(grad_input):
    def run(m, x):
        return m(x.requires_grad_(grad_input))
    return run


def test_hand_count_fp16_autocast_input_without_grad():
    r = memory_model(Tiny(), _fwd(False), (4, 8))
    # mm(x16, w16.t()) saves x16 only (the weight needs x's grad-free side):
    # x16 4*8*2 = 64 B; relu result 4*16*2 = 128 B; the two views of the
    # relu result saved by mul share its storage: counted once
    assert r.saved == 64 + 128
    assert r.num_saved_storages == 2
    assert r.saved_by_op == {'aten._to_copy': 64, 'aten.relu': 128}
    assert (r.params, r.grads, r.adamw_state) == (512, 512, 1024)
    assert r.total == 192 + 512 + 512 + 1024


def test_hand_count_fp16_autocast_input_with_grad():
    r = memory_model(Tiny(), _fwd(True), (4, 8))
    # now mm also saves the fp16 weight copy (16*8*2 = 256 B)
    assert r.saved_by_op == {'aten._to_copy': 64, 'aten.relu': 128,
                             WEIGHT_CAST: 256}


def test_hand_count_fp32_parameters_are_not_activations():
    r = memory_model(Tiny(), _fwd(True), (4, 8), dtype=None)
    # x itself (4*8*4 = 128 B, made outside any op) and the relu result
    # (4*16*4 = 256 B); the weight is saved too, but it is a parameter
    assert r.saved_by_op == {'input or host': 128, 'aten.relu': 256}
    assert r.saved == 384


class Attn(nn.Module):
    """SDPA with a (2, 4, 10, 10) bias that requires grad, laid out
    contiguous or as a permuted (2, 10, 10, 4) table."""

    def __init__(self, permuted):
        super().__init__()
        self.permuted = permuted
        self.table = nn.Parameter(torch.zeros(2, 10, 10, 4))

    def forward(self, x):
        q = x.view(2, 4, 10, 32)
        bias = self.table.permute(0, 3, 1, 2)
        if not self.permuted:
            bias = bias.contiguous()
        return F.scaled_dot_product_attention(q, q, q, attn_mask=bias).sum()


def test_attention_kernel_saves_what_it_saves_on_a_gpu():
    eff = memory_model(Attn(False), _fwd(True), (2 * 4 * 10 * 32, ))
    assert eff.backends == {'efficient': 1}
    # pad_bias<8>: a (2, 4, 10, 16) fp16 copy of the bias, saved
    assert eff.saved_by_op['aten.constant_pad_nd'] == 2 * 4 * 10 * 16 * 2
    # q, k and v are one fp32 view passed three times: autocast casts each
    # argument (it caches only leaves), three fp16 copies; then the output
    # and the log-sum-exp
    qkv = 2 * 4 * 10 * 32 * 2
    assert eff.saved_by_site['aten._to_copy float16 [2, 4, 10, 32]'] == \
        3 * qkv
    assert eff.saved_by_op['aten._scaled_dot_product_efficient_attention'] \
        >= qkv + 2 * 4 * 10 * 4
    assert '_softmax' not in str(eff.saved_by_op)
    math = memory_model(Attn(True), _fwd(True), (2 * 4 * 10 * 32, ))
    assert math.backends == {'math': 1}
    # the math kernel keeps the (2, 4, 10, 10) probabilities (fp32)
    assert math.saved_by_op['aten._safe_softmax'] == 2 * 4 * 10 * 10 * 4
    red = reduction(eff, math)
    assert set(red) == {'total', 'saved'}


def test_flash_pads_the_head_dim_to_a_multiple_of_8():
    from greenmim_mm.analysis import Device

    class NoMask(nn.Module):
        def __init__(self, e):
            super().__init__()
            self.e = e
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x):
            q = x.view(2, 2, 16, self.e) * self.w
            return F.scaled_dot_product_attention(q, q, q).sum()

    flash = Device(enabled=('flash', 'math'))
    r30 = memory_model(NoMask(30), _fwd(False), (2 * 2 * 16 * 30, ),
                       device=flash)
    assert r30.backends == {'flash': 1}
    # pad_last_dim<8>: q, k and v each padded to head dim 32, fp16
    assert r30.saved_by_op['aten.constant_pad_nd'] == 3 * 2 * 2 * 16 * 32 * 2
    r32 = memory_model(NoMask(32), _fwd(False), (2 * 2 * 16 * 32, ),
                       device=flash)
    assert 'aten.constant_pad_nd' not in r32.saved_by_op
