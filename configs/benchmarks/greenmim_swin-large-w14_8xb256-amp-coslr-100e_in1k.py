# Fine-tuning of a GreenMIM Swin-L window-14 model (ours or the paper's
# released one, converted with tools/convert_official.py --prefix backbone.),
# the paper's Swin-L recipe (its ft_configs): 100 epochs, drop path 0.3,
# layer decay 0.8, lr 1e-3 x batch / 512, warm-up from 2e-7, cosine to
# 3.5e-7 (both x batch / 512). Same windows as the Swin-B sibling: 14, and 7
# in the last stage.
_base_ = './greenmim_swin-base-w14_8xb256-amp-coslr-100e_in1k.py'

# what `mim train mmpretrain configs/greenmim_swin-large-w14_...in1k.py` writes
pretrained = ('work_dirs/greenmim_swin-large-w14_8xb256-amp-coslr-800e_in1k/'
              'epoch_800.pth')

model = dict(
    backbone=dict(
        arch='large', drop_path_rate=0.3,
        init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=192 * 2**3))

optim_wrapper = dict(
    optimizer=dict(lr=1e-3 * 2048 / 512),
    paramwise_cfg=dict(layer_decay_rate=0.8))

# the sibling's 20 warm-up epochs and cosine to 100 epochs, from and to the
# Swin-L lrs
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=2e-7 / 1e-3),
    dict(_base_.param_scheduler[1], eta_min=3.5e-7 * 2048 / 512)
]
