"""A full GreenMIM training step on a non-CPU device, audited op by op.

Runs on the meta device (no GPU here): masks and grouping plans are made on
the host, the step (loss, backward, AdamW) on ``meta``. A dispatch mode
records every op and checks the properties a GPU step needs: no
data-dependent op on the device (each one makes the host wait for the GPU),
no blocking host-to-device copy, no CPU tensor mixed into a device op.
"""
import pytest
import torch
from mmpretrain.registry import MODELS
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import greenmim_mm  # noqa: F401

aten = torch.ops.aten

#: ops whose result depends on device data and so syncs the host
SYNCING = {
    aten._local_scalar_dense.default, aten.item.default,
    aten.nonzero.default, aten.masked_select.default,
    aten.unique_consecutive.default, aten._unique2.default,
    aten.bincount.default, aten.repeat_interleave.Tensor,
    aten.is_nonzero.default, aten.equal.default,
}

SWIN = dict(
    type='GreenSwinTransformer',
    arch=dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4]))
SVT = dict(
    type='GreenSVT',
    arch=dict(embed_dims=[16, 32, 32, 48], depths=[1, 2, 1, 2],
              num_heads=[1, 2, 2, 4], patch_sizes=[4, 2, 2, 2],
              strides=[4, 2, 2, 2], mlp_ratios=[4, 4, 4, 4],
              sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7]),
    norm_after_stage=[False, False, False, True])


class StepAudit(TorchDispatchMode):
    """Records the problems of every op that touches the device.

    Args:
        device (str): The device type audited.
        late_copies (bool): Also report a host-to-device copy issued after
            the first device computation (on a GPU, a copy from pageable
            memory then waits for the queued kernels). Defaults to False.
    """

    def __init__(self, device: str, late_copies: bool = False):
        super().__init__()
        self.device = device
        self.late_copies = late_copies
        self.computing = False
        self.problems = []
        self.device_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0]
                   if isinstance(t, torch.Tensor)]
        on_dev = [t for t in tensors if t.device.type == self.device]
        name = str(func)
        if on_dev and func in SYNCING:  # before running it: it may raise
            self.problems.append(f'data-dependent op {name}')
        out = func(*args, **kwargs)
        outs = [t for t in tree_flatten(out)[0]
                if isinstance(t, torch.Tensor)]
        touches = on_dev or any(t.device.type == self.device for t in outs)
        if not touches:
            return out  # host work
        self.device_ops += 1
        is_copy = func in (aten._to_copy.default, aten.copy_.default)
        h2d = is_copy and any(t.device.type == 'cpu' for t in tensors)
        if h2d and not kwargs.get(
                'non_blocking', args[2] if func is aten.copy_.default
                and len(args) > 2 else False):
            self.problems.append(f'blocking host-to-device copy {name}')
        if h2d and self.late_copies and self.computing:
            self.problems.append(f'host-to-device copy {name} after the '
                                 'first device computation')
        if not is_copy:
            self.computing = True
            cpu = [t for t in tensors
                   if t.device.type == 'cpu' and t.dim() > 0]
            if cpu:
                self.problems.append(
                    f'CPU tensor {tuple(cpu[0].shape)} in device op {name}')
        return out


def _model(backbone, in_channels):
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='GreenMIM', mask_ratio=0.75, backbone=backbone,
        neck=dict(type='GreenMIMDecoder', in_channels=in_channels,
                  embed_dims=64, num_heads=4),
        head=dict(type='GreenMIMHead', norm_pix=True, patch_size=32,
                  loss=dict(type='PixelReconstructionLoss',
                            criterion='L2'))))
    model.init_weights()
    return model


@pytest.mark.parametrize('backbone,width', [(SWIN, 256), (SVT, 48)],
                         ids=['swin', 'svt'])
def test_training_step_on_device_has_no_sync_and_no_blocking_copy(
        backbone, width):
    model = _model(backbone, width).train()
    model.to('meta')  # parameters on a device without data
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    imgs = torch.empty(4, 3, 224, 224, device='meta')
    # the first step fills per-grid caches (one non-blocking copy each);
    # in a warm step every copy comes before the encoder's first kernel
    audits = [StepAudit('meta'), StepAudit('meta', late_copies=True)]
    for audit in audits:
        with audit:
            loss = model.loss(imgs, None)['loss']
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert audit.device_ops > 100  # the step really ran on the device
        assert audit.problems == []
    assert loss.device.type == 'meta' and loss.shape == ()


def test_audit_catches_a_sync_and_a_blocking_copy():
    """The audit is not blind: the faults it looks for are reported."""
    audit = StepAudit('meta', late_copies=True)
    x = torch.empty(4, device='meta')
    with audit:
        _ = x + torch.ones(4).to('meta')  # blocking copy
        _ = x + torch.ones(4).to('meta', non_blocking=True)  # late copy
        _ = x[torch.tensor([0, 2])]  # CPU index into a device tensor
        try:
            torch.empty(3, device='meta').nonzero()
        except (NotImplementedError, RuntimeError):
            pass  # meta has no data: the op was still dispatched
    kinds = ' | '.join(audit.problems)
    assert 'blocking host-to-device copy' in kinds
    assert 'CPU tensor' in kinds
    assert 'data-dependent op' in kinds
    assert 'after the first device computation' in kinds


def test_decoder_position_embedding_is_cached_per_grid():
    model = _model(SWIN, 256)
    x = torch.randn(2, 12, 256)
    pos = model.neck.pos_embed((7, 7), x)
    assert model.neck.pos_embed((7, 7), x) is pos
    assert model.neck.pos_embed((7, 9), x).shape == (1, 63, 64)
