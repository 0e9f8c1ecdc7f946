# GreenMIM ConvNeXt-V2-B: the V2-T sibling with the base arch (depths
# 3-3-27-3, widths 128-1024). Usage:
#   mim train mmpretrain configs/greenmim_convnext-v2-base_8xb256-amp-coslr-800e_in1k.py
_base_ = './greenmim_convnext-v2-tiny_8xb256-amp-coslr-800e_in1k.py'

model = dict(backbone=dict(arch='base'), neck=dict(in_channels=1024))
