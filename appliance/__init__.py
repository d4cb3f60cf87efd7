"""mail-appliance: the on-box agent.

Layers (see DESIGN.md): settings -> facts -> plan (pure) -> apply (the only writer).
"""

__version__ = "0.1.0"
