from .greenmim_head import GreenMIMHead

__all__ = ['GreenMIMHead']
