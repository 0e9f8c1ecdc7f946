# Swin-B with window 14. At 224 px stage 3 (14x14) is one window and stage 4
# (7x7) is smaller than it; both use plain attention on the visible tokens.
_base_ = './greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py'

model = dict(backbone=dict(window_size=14))
