# Swin-L with window 14 (the paper's Swin-L/w14).
_base_ = './greenmim_swin-base-w14_8xb256-amp-coslr-800e_in1k.py'

model = dict(
    backbone=dict(arch='large'), neck=dict(in_channels=192 * 2**3))
