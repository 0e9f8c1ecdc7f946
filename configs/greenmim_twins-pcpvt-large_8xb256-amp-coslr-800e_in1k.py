# Twins-PCPVT-L instead of SVT-L (global sub-sampled attention only).
_base_ = './greenmim_twins-svt-large_8xb256-amp-coslr-800e_in1k.py'

model = dict(
    backbone=dict(type='GreenPCPVT', arch='large'),
    neck=dict(in_channels=512))
