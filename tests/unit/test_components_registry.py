"""Adding a component is: its declaration + its deploy module + its templates + its verify module.

The registry (citadel.components.COMPONENTS) is the one list; these tests hold the rest of the
tree to it: every module under citadel/components declares one component and is registered, the
typed ``Host`` carries exactly the registered sections (typed by their config models), the
``Role`` literal names exactly the registered roles, and every deploy module a component can be
converged by exists with its template folder and verify module.
"""

from __future__ import annotations

import ast
import importlib
import re
import types
import typing
from pathlib import Path

import pytest

from citadel import artifacts, components
from citadel.components import (
    BASE_ROLE,
    COMPONENTS,
    CONFIG_MODELS,
    ORDER,
    REGISTRY,
    ROLE_COMPONENTS,
    ROLES,
    deploy_name,
)
from citadel.components import model_server as ms
from citadel.components import prometheus as prom
from citadel.model.cluster import Host, Role

ROOT = Path(__file__).resolve().parents[2]
HOST_FIELDS = ("name", "address", "roles", "distribution")

DEPLOY_NAMES = sorted({d for c in COMPONENTS for d in c.deploy_names})


def _component_modules() -> list[str]:
    return sorted(
        p.stem for p in (ROOT / "citadel" / "components").glob("*.py") if p.stem != "__init__"
    )


@pytest.mark.parametrize("module", _component_modules())
def test_every_component_module_declares_one_registered_component(module: str) -> None:
    mod = importlib.import_module(f"citadel.components.{module}")
    declared = getattr(mod, "COMPONENT", None)
    assert declared is not None, f"citadel/components/{module}.py declares no COMPONENT"
    assert any(c is declared for c in COMPONENTS), (
        f"{module}.COMPONENT ({declared.name}) is not in citadel.components.COMPONENTS"
    )
    assert declared.config is mod.Config
    assert declared.files is getattr(mod, "files", None), "files= is the module's files()"


def test_the_registry_has_one_declaration_per_module() -> None:
    assert len(COMPONENTS) == len(_component_modules()) == len(REGISTRY)


def test_host_fields_are_the_registry() -> None:
    sections = [f for f in Host.model_fields if f not in HOST_FIELDS]
    assert sections == list(ORDER), "Host's section fields, in converge order, are the registry"
    for name, field in Host.model_fields.items():
        if name in HOST_FIELDS:
            continue
        allowed = set(typing.get_args(field.annotation)) or {field.annotation}
        assert REGISTRY[name].config in allowed, f"Host.{name} is typed {field.annotation}"
        assert allowed <= {REGISTRY[name].config, types.NoneType}
    for name in ROLE_COMPONENTS[BASE_ROLE]:
        assert Host.model_fields[name].default is not None, f"every host carries {name}"


def test_role_literal_is_the_registry() -> None:
    assert set(typing.get_args(Role)) == set(ROLES) - {BASE_ROLE}
    assert ROLES[0] == BASE_ROLE


def test_tables_derive_from_the_declarations() -> None:
    assert tuple(c.name for c in COMPONENTS) == ORDER
    assert {s for ss in ROLE_COMPONENTS.values() for s in ss} == set(ORDER)
    for role, sections in ROLE_COMPONENTS.items():
        assert [REGISTRY[s].role for s in sections] == [role] * len(sections)
        assert list(sections) == sorted(sections, key=ORDER.index)
    assert {c.name: c.config for c in COMPONENTS} == CONFIG_MODELS
    assert tuple(ROLE_COMPONENTS) == components.ROLES


def test_model_section_picks_its_engines_module() -> None:
    assert REGISTRY["model"].deploy_names == typing.get_args(ms.Engine)
    for engine in typing.get_args(ms.Engine):
        cfg = ms.Config.model_construct(engine=engine)
        assert deploy_name("model", cfg) == engine
    assert deploy_name("qdrant", REGISTRY["qdrant"].config()) == "qdrant"


def test_artifacts_come_from_the_declarations() -> None:
    qdrant = REGISTRY["qdrant"].config()
    assert artifacts.artifact_of("qdrant", qdrant) == ("qdrant", qdrant.version)
    ollama = ms.Config.model_construct(engine="ollama", ollama=ms.Ollama())
    assert artifacts.artifact_of("model", ollama) == ("ollama", str(ollama.ollama.version))
    assert artifacts.artifact_of("model", ms.Config.model_construct(engine="vllm")) is None
    declared = [c.name for c in COMPONENTS if c.artifact is not None]
    assert declared == ["model", "qdrant"]


def test_scrape_jobs_are_the_components_that_declare_one() -> None:
    scraped = {c.name for c in COMPONENTS if c.scrape is not None}
    assert scraped == {
        "prometheus",
        "alertmanager",
        "node_exporter",
        "gpu_exporter",
        "model",
        "postgres_exporter",
        "redis_exporter",
        "qdrant",
        "gateway",
    }
    assert not hasattr(prom, "JOB_ORDER")


def _verify_component(path: Path) -> str | None:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["COMPONENT"]
            and isinstance(node.value, ast.Constant)
        ):
            return str(node.value.value)
    return None


@pytest.mark.parametrize("name", DEPLOY_NAMES)
def test_every_declared_component_has_its_deploy_templates_and_verify(name: str) -> None:
    deploy = ROOT / "deploys" / f"{name}.py"
    assert deploy.is_file(), f"no deploy module deploys/{name}.py"
    assert re.search(r"^def apply\(|^apply\b|, apply\b", deploy.read_text(), re.M), (
        f"deploys/{name}.py has no apply()"
    )
    templates = ROOT / "templates" / name
    assert templates.is_dir() and any(templates.glob("*.j2")), f"no templates/{name}/*.j2"
    verify = ROOT / "tests" / "verify" / f"test_{name}.py"
    assert verify.is_file(), f"no verify module tests/verify/test_{name}.py"
    assert _verify_component(verify) == name, f'{verify.name}: COMPONENT = "{name}"'


def test_every_deploy_module_belongs_to_a_declared_component() -> None:
    modules = {p.stem for p in (ROOT / "deploys").glob("*.py") if not p.stem.startswith("_")}
    assert modules == set(DEPLOY_NAMES)
