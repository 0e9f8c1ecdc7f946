from .reconstruction_hook import ReconstructionVisHook

__all__ = ['ReconstructionVisHook']
