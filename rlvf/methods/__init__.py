"""The methods rlvf runs, one module each; registering a method is one line below.

See `rlvf.methods.registry` for what a method module declares, and the README's "Adding a
method" for the steps.
"""

from rlvf.methods.registry import (
    Inputs,
    Method,
    Training,
    curves,
    get,
    is_training,
    methods,
    names,
    register,
    scan_params,
    unregister,
)

# One line per method: its module defines METHOD. The order is the order of the CLI commands
# and of method config sections.
REGISTERED = (
    "rlvf.methods.bootstrap",
    "rlvf.methods.pairs",
    "rlvf.methods.sft",
    "rlvf.methods.dpo",
    "rlvf.methods.grpo",
    "rlvf.methods.kto",
    "rlvf.methods.orpo",
    "rlvf.methods.rloo",
    "rlvf.methods.rm",
    "rlvf.methods.ppo",
    "rlvf.methods.online_dpo",
    "rlvf.methods.eval",
)

__all__ = [
    "REGISTERED",
    "Inputs",
    "Method",
    "Training",
    "curves",
    "get",
    "is_training",
    "methods",
    "names",
    "register",
    "scan_params",
    "unregister",
]
