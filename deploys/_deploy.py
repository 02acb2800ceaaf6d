"""pyinfra's `@deploy` with the decorated function's own signature kept for type checkers.

pyinfra types a deploy as `PyinfraOperation[P]`, whose `__call__` also takes the global
arguments positionally, so mypy rejects plain calls such as `install(ctx, cfg)`. Behaviour is
exactly pyinfra's decorator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

from pyinfra.api import deploy as _pyinfra_deploy

P = ParamSpec("P")
R = TypeVar("R")


def deploy(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def wrap(func: Callable[P, R]) -> Callable[P, R]:
        return cast(Callable[P, R], _pyinfra_deploy(name)(func))

    return wrap
