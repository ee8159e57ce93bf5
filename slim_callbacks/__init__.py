"""slim_callbacks: channel pruning for PaddlePaddle dynamic graph, inside model.fit()."""
from slim_callbacks.errors import ConfigError, SlimError

__version__ = "0.1.0"
__all__ = ["ConfigError", "SlimError"]
