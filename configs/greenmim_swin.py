# Entry point: GreenMIM pretraining of Swin-B (window 7, 224 px, ratio 0.75)
# on ImageNet-1k, 800 epochs. Usage:
#   mim train mmpretrain configs/greenmim_swin.py [--launcher pytorch|slurm]
_base_ = './greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py'
