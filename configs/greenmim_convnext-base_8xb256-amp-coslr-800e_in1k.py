# GreenMIM ConvNeXt-B (V1: layer scale 1e-6, no GRN), otherwise the V2-B
# sibling's recipe. Usage:
#   mim train mmpretrain configs/greenmim_convnext-base_8xb256-amp-coslr-800e_in1k.py
_base_ = './greenmim_convnext-v2-base_8xb256-amp-coslr-800e_in1k.py'

model = dict(backbone=dict(use_grn=False, layer_scale_init_value=1e-6))
