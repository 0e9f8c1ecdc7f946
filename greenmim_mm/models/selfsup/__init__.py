from .greenmim import GreenMIM

__all__ = ['GreenMIM']
