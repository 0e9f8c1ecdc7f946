# Swin-B with window 14, laid out as the paper's Swin-B/w14: window 14 in
# stages 1-3 and window 7 in the last stage (see
# configs/_base_/models/swin_paper-layout.py), so ours and the authors' w14
# checkpoints share one layout.
_base_ = './greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py'

model = dict(backbone=_base_.paper_swin_w14)
