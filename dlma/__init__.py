"""dlma: self-rewarding contrastive prompt distillation (DLMA, Liu et al., ACL 2024).

Library code lives here; `stages/` holds the thin DVC stage wrappers around it.
"""

__version__ = "0.1.0"
