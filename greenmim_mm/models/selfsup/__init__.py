from .config_check import check_greenmim_parts, stage_widths
from .greenmim import GreenMIM

__all__ = ['GreenMIM', 'check_greenmim_parts', 'stage_widths']
