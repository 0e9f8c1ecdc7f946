"""A dispatch mode that audits a training step for what stalls a GPU.

Run a step on a device without data (``meta``, or fake CUDA tensors) under
:class:`StepAudit`: every op that touches the device is checked for a
host-device sync (an op whose result depends on device data, boolean-mask
indexing included: on CUDA it runs ``nonzero``), a blocking
host-to-device copy, a CPU tensor mixed into a device op and, optionally, a
host-to-device copy issued after the first device computation.
"""
from collections import Counter
from typing import Dict, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

#: ops whose result depends on device data and so syncs the host
SYNCING = {
    aten._local_scalar_dense.default, aten.item.default,
    aten.nonzero.default, aten.masked_select.default,
    aten.unique_consecutive.default, aten._unique2.default,
    aten._unique.default, aten.unique_dim.default,
    aten.bincount.default, aten.repeat_interleave.Tensor,
    aten.is_nonzero.default, aten.equal.default,
}

#: indexing ops that run ``nonzero`` (a sync) on a boolean index
BOOL_INDEXING = {
    aten.index.Tensor, aten.index_put_.default, aten.index_put.default,
    aten._index_put_impl_.default,
}


def _bool_index(func, args) -> bool:
    """True when ``func`` indexes with a boolean (or uint8) mask."""
    if func not in BOOL_INDEXING or len(args) < 2:
        return False
    return any(isinstance(i, torch.Tensor)
               and i.dtype in (torch.bool, torch.uint8) for i in args[1])

#: problem kinds, in the order :meth:`StepAudit.counts` reports them
KINDS = ('sync', 'blocking_h2d_copy', 'late_h2d_copy',
         'cpu_tensor_in_device_op')


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
        self.problems: List[str] = []
        self.kinds: List[str] = []
        self.device_ops = 0

    def _report(self, kind: str, message: str) -> None:
        self.kinds.append(kind)
        self.problems.append(message)

    def counts(self) -> Dict[str, int]:
        """Number of problems of each kind in :data:`KINDS`."""
        c = Counter(self.kinds)
        return {k: c.get(k, 0) for k in KINDS}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0]
                   if isinstance(t, torch.Tensor)]
        on_dev = [t for t in tensors if t.device.type == self.device]
        name = str(func)
        if on_dev and func in SYNCING:  # before running it: it may raise
            self._report('sync', f'data-dependent op {name}')
        elif on_dev and _bool_index(func, args):
            self._report('sync', f'boolean-mask indexing {name} (nonzero)')
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
            self._report('blocking_h2d_copy',
                         f'blocking host-to-device copy {name}')
        if h2d and self.late_copies and self.computing:
            src = next(t for t in tensors if t.device.type == 'cpu')
            self._report('late_h2d_copy', f'host-to-device copy {name} of '
                         f'{tuple(src.shape)} after the first device '
                         'computation')
        if not is_copy:
            self.computing = True
            cpu = [t for t in tensors
                   if t.device.type == 'cpu' and t.dim() > 0]
            if cpu:
                self._report(
                    'cpu_tensor_in_device_op',
                    f'CPU tensor {tuple(cpu[0].shape)} in device op {name}')
        return out


def audit_training_step(model, batch: int, img_size: int = 224,
                        device: str = 'meta', steps: int = 2
                        ) -> List[Dict[str, int]]:
    """Audit whole training steps (loss, backward, AdamW) on ``device``.

    ``model`` (on the CPU; it is moved to ``device`` in place) runs
    ``steps`` steps, each under a :class:`StepAudit` with ``late_copies``:
    the first step fills per-grid caches, later ones are the steady state.

    Args:
        model (nn.Module): A self-supervised model with ``loss(inputs,
            data_samples)`` that draws its own masks (GreenMIM).
        batch (int): Images per step.
        img_size (int): Image side. Defaults to 224.
        device (str): A device without data. Defaults to 'meta'.
        steps (int): Steps to audit. Defaults to 2.

    Returns:
        list[dict]: Per step, :meth:`StepAudit.counts` plus ``device_ops``
        and ``problems`` (the messages, at most 20).
    """
    model.train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    imgs = torch.empty(batch, 3, img_size, img_size, device=device)
    out = []
    for _ in range(steps):
        audit = StepAudit(device, late_copies=True)
        with audit:
            loss = model.loss(imgs, None)['loss']
            opt.zero_grad()
            loss.backward()
            opt.step()
        res: Dict = dict(audit.counts(), device_ops=audit.device_ops)
        res['problems'] = audit.problems[:20]
        out.append(res)
    return out
