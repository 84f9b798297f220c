"""``tinyw2v2.nn``: parameters, modules and the layers the model is built from (named like ``torch.nn``).

    import tinyw2v2.nn as nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(512, 768)          # registered submodule "proj"
            self.norm = nn.LayerNorm(768)
        def forward(self, x):
            return self.norm(self.proj(x))

    block = Block().to("cuda")
    block.state_dict()                               # {"proj.weight": (768, 512), "proj.bias": ..., ...}
    block.save("ckpt.npz", metadata={"dim": 768})   # atomic write
    meta = block.load("ckpt.npz")

``module.py``: ``Module`` and ``Parameter`` (registration, names, state dicts, devices); ``layers.py``: the layers.
"""
from ..io import CheckpointError, load_arrays, save_arrays  # noqa: F401
from .layers import Conv1d, Dropout, GroupNorm, LayerNorm, Linear, ModuleList  # noqa: F401
from .module import IncompatibleKeys, Module, Parameter  # noqa: F401
