"""Registry of token mixers (attention mechanisms) for the LRA suite.

    import attentions
    attentions.available()                                   # sorted registered names
    layer = attentions.build("softmax", dim=64, heads=2, max_len=1024, dropout=0.0)
    y = layer(x, mask)                                       # x (B, N, dim); mask (B, N) bool

Adding a variant is one file in this folder (or in a plugin package, see registry.py) with one
`@attentions.register("name")` decorator: every module here is imported on first use of the
package, so a new file is registered, listed by `lra list` and run through the conformance tests
without touching anything else.
"""

import importlib
import pkgutil

from attentions.base import (
    AttentionBase,
    NoAttentionMap,
    core_dtype,
    float32_core,
    key_mask,
    linear_attention,
    merge_heads,
    quadratic_linear_attention,
    real_positions,
    real_rank,
    sample_real,
    sequence_conv,
    split_heads,
)
from attentions.registry import (
    ENTRY_POINT_GROUP,
    Entry,
    NoOptions,
    available,
    build,
    default_name,
    describe_options,
    get,
    load_plugins,
    option_fields,
    options_dict,
    register,
    resolve,
    unregister,
)

_INFRASTRUCTURE = {"base", "registry"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "AttentionBase", "NoAttentionMap", "ENTRY_POINT_GROUP", "Entry", "NoOptions", "available", "build", "core_dtype",
    "default_name", "describe_options", "float32_core", "get", "key_mask", "linear_attention",
    "load_plugins", "merge_heads", "option_fields", "options_dict", "quadratic_linear_attention",
    "real_positions", "real_rank", "register", "resolve", "sample_real", "sequence_conv", "split_heads",
    "unregister",
]
