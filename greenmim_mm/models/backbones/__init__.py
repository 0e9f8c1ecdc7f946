from .green_swin import GreenSwinTransformer, green_swin_block, merge_visible

__all__ = ['GreenSwinTransformer', 'green_swin_block', 'merge_visible']
