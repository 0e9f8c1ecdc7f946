def twins_reference(*a, **k): raise NotImplementedError
def twins_reference_maps(*a, **k): raise NotImplementedError
