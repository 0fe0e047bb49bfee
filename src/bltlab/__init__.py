"""bltlab: the Byte Latent Transformer study on string reversal."""

from bltlab.errors import BltlabError

__all__ = ["BltlabError"]
__version__ = "0.1.0"
