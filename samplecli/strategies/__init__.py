"""The strategy registry (public API): transforms, selectors, named strategies and chains.

    from samplecli.strategies import build_strategy
    strategy = build_strategy({"temperature": 0.8, "top_p": 0.9}).strategy
    print(strategy)                                   # logits -> temperature(0.8) -> top-p(0.9) -> sample
    probs = strategy.distribution(logits, input_ids)  # what the next token is drawn from
"""

# Importing a module registers its samplers: the core ones first, so that listings show them first.
from samplecli.strategies import selectors, transforms  # noqa: F401

# isort: split
from samplecli.strategies import constraint, penalties, reshaping, stateful, truncation  # noqa: F401
from samplecli.strategies.base import SELECTORS, TRANSFORMS, Param, Selector, Strategy, Transform, register
from samplecli.strategies.build import (
    DEFAULT_SETTINGS,
    FLAG_ORDER,
    NAMED,
    Built,
    NamedStrategy,
    build_strategy,
    describe_registry,
    parse_chain,
    register_named,
    strategy_name,
)
from samplecli.strategies.plugins import load_plugins

load_plugins()  # the samplers other packages bring (entry points `samplecli.samplers`)

__all__ = [
    "DEFAULT_SETTINGS", "FLAG_ORDER", "NAMED", "SELECTORS", "TRANSFORMS", "Built", "NamedStrategy", "Param",
    "Selector", "Strategy", "Transform", "build_strategy", "describe_registry", "parse_chain", "register",
    "register_named", "strategy_name",
]
