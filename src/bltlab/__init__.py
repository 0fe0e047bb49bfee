"""bltlab: the Byte Latent Transformer study on string reversal."""

import os

from bltlab.errors import BltlabError

# oneDNN (torch's CPU kernels) keeps a compiled kernel per tensor shape, up to 1,024; batches
# of every shape fill that cache and a run's memory grows with it. Off unless set otherwise
# (docs/log/15-speed-memory.md: no slower at these sizes).
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")

__all__ = ["BltlabError"]
__version__ = "0.1.0"
