"""Run a deploy against a pyinfra State whose host never connects: facts come from a dict.

The approach of pyinfra's own operation tests (arguments + facts -> commands), applied to a whole
deploy: ``run(fn, facts, *args)`` executes the deploy function under a fresh State with one host,
then walks the operations in order and renders each one's commands from the supplied facts.
``_if`` conditions are not evaluated (they depend on execution); ``Op.conditional`` says whether
an operation has one.

Facts: keys are fact class names (``"LinuxDistribution"``) or ``("Command", "<command>")`` /
``("File", "/path")`` for facts taking an argument (the first argument or keyword value); a value
may be a callable taking the arguments. Unknown facts read as the fact's default (None / {}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.host import Host
from pyinfra.context import ctx_host, ctx_state

from citadel.loader import load_cluster
from citadel.secrets import MaskedSecrets
from deploys._context import DeployContext


@dataclass
class Op:
    name: str
    commands: list[str]
    conditional: bool
    uploads: dict[str, str] = field(default_factory=dict)  # dest -> content (in-memory sources)

    def text(self) -> str:
        return "\n".join(self.commands)


@dataclass
class Run:
    ops: list[Op] = field(default_factory=list)

    def names(self) -> list[str]:
        return [op.name for op in self.ops]

    def commands(self) -> list[str]:
        return [c for op in self.ops for c in op.commands]

    def op(self, fragment: str) -> Op:
        hits = [op for op in self.ops if fragment in op.name]
        assert len(hits) == 1, f"{fragment!r} matches {[o.name for o in hits]} in {self.names()}"
        return hits[0]

    def index(self, fragment: str) -> int:
        return self.ops.index(self.op(fragment))

    def has(self, fragment: str) -> bool:
        return any(fragment in op.name for op in self.ops)


def _render(command: Any) -> str:
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    if isinstance(command, FileUploadCommand):
        src = command.src if isinstance(command.src, str) else "<memory>"
        return f"<upload {src} -> {command.dest}>"
    if isinstance(command, FunctionCommand):
        return f"<call {command.function.__name__}{command.kwargs or ''}>"
    return f"<{type(command).__name__}>"


@contextmanager
def _fake_facts(facts: dict[Any, Any]) -> Iterator[None]:
    original = Host.get_fact

    def get_fact(self: Host, cls: Any, *args: Any, **kwargs: Any) -> Any:
        name = cls.__name__
        key_args = [*args, *kwargs.values()]
        for key in ((name, key_args[0]) if key_args else None, name):
            if key is not None and key in facts:
                value = facts[key]
                return value(*args, **kwargs) if callable(value) else value
        return cls.default() if hasattr(cls, "default") else None

    Host.get_fact = get_fact  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        Host.get_fact = original  # type: ignore[method-assign]


# Facts every Linux host answers the same way, under the ones a test supplies.
BASE_FACTS: dict[Any, Any] = {
    "Os": "Linux",
    "Arch": "x86_64",
    "Kernel": "Linux",
    "Which": lambda command="", **_: f"/usr/bin/{command}",
}


def run(fn: Callable[..., Any], facts: dict[Any, Any], *args: Any) -> Run:
    inventory = Inventory((["testhost"], {}))
    state = State(inventory, Config())
    host = inventory.get_host("testhost")
    state.current_op_file_number = 0
    result = Run()
    with _fake_facts({**BASE_FACTS, **facts}), ctx_state.use(state), ctx_host.use(host):
        host.init(state)
        fn(*args)
        for op_hash in state.get_op_order():
            meta = state.get_op_meta(op_hash)
            data = state.get_op_data_for_host(host, op_hash)
            raw = list(data.command_generator())
            uploads = {
                c.dest: c.src.getvalue()
                for c in raw
                if isinstance(c, FileUploadCommand) and hasattr(c.src, "getvalue")
            }
            name = ", ".join(sorted(meta.names)) if meta.names else op_hash
            conditional = bool(data.global_arguments.get("_if"))
            result.ops.append(Op(name, [_render(c) for c in raw], conditional, uploads))
    return result


ROOT = Path(__file__).resolve().parents[2]


def context(inventory: str, host: str) -> DeployContext:
    loaded = load_cluster(ROOT / inventory, secrets=MaskedSecrets())
    return DeployContext(loaded, loaded.cluster.host(host))


# Distribution facts as pyinfra's LinuxDistribution returns them.
DISTROS: dict[str, dict[str, Any]] = {
    "ubuntu2204": {
        "name": "Ubuntu",
        "major": 22,
        "minor": 4,
        "release_meta": {"ID": "ubuntu", "VERSION_ID": "22.04", "VERSION_CODENAME": "jammy"},
    },
    "ubuntu2404": {
        "name": "Ubuntu",
        "major": 24,
        "minor": 4,
        "release_meta": {"ID": "ubuntu", "VERSION_ID": "24.04", "VERSION_CODENAME": "noble"},
    },
    "debian12": {
        "name": "Debian",
        "major": 12,
        "minor": None,
        "release_meta": {"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"},
    },
    "debian13": {
        "name": "Debian",
        "major": 13,
        "minor": None,
        "release_meta": {"ID": "debian", "VERSION_ID": "13", "VERSION_CODENAME": "trixie"},
    },
}
PYTHONS = {"ubuntu2204": "3.10", "ubuntu2404": "3.12", "debian12": "3.11", "debian13": "3.13"}
