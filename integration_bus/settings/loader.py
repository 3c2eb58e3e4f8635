"""Load ``config/bus.yaml`` into validated settings, or say exactly what is wrong and where.

Every problem becomes a ``ConfigError`` reading ``file:line:col: field: problem`` with a hint
(did-you-mean for unknown keys and names). All problems are collected, so ``bus lint`` shows
them at once; :func:`load_config` raises :class:`ConfigErrors` holding them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from integration_bus.errors import ConfigError, did_you_mean
from integration_bus.redact import collect_secrets, known, looks_secret, remember
from integration_bus.registry import Registry
from integration_bus.settings.interpolate import Substituted, interpolate
from integration_bus.settings.models import (
    NAME_PATTERN,
    BusSettings,
    ConnectorInstance,
    RouteSettings,
)
from integration_bus.settings.yamlsource import Located, Path_, load_yaml
from integration_bus.yamlmodel import validation_errors

__all__ = ["CONFIG_FILE", "Config", "ConfigErrors", "Instance", "load_config"]

CONFIG_FILE = "bus.yaml"
_NAME_RE = re.compile(NAME_PATTERN)
_NAME_HINT = "names are lower-case letters, digits, '_' and '-'"


class ConfigErrors(ConfigError):
    """Several configuration problems, each a ConfigError with its own location."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__(f"{len(errors)} configuration problem(s)")
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


@dataclass(frozen=True)
class Instance:
    """A configured source or sink: its plugin name and the plugin-validated config."""

    name: str
    connector: str
    config: BaseModel


@dataclass(frozen=True)
class Config:
    """A loaded, validated configuration."""

    file: Path
    root: Path  # project dir: relative paths in the config resolve against it
    settings: BusSettings
    sources: dict[str, Instance] = field(default_factory=dict)
    sinks: dict[str, Instance] = field(default_factory=dict)
    #: values never to be shown: secret fields, URL passwords, ${ENV} values of secret names
    secrets: frozenset[str] = frozenset()

    @property
    def embedded(self) -> bool:
        return self.settings.broker.url is None

    @property
    def mappings_dir(self) -> Path:
        return self.root / "mappings"

    @property
    def schemas_dir(self) -> Path:
        return self.root / "schemas"

    def resolve(self, path: str | Path) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.root / candidate


def load_config(config_dir: Path, registry: Registry,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load ``<config_dir>/bus.yaml``; raises ConfigErrors (all problems) or ConfigError."""
    file = Path(config_dir) / CONFIG_FILE
    located = load_yaml(file)
    used = interpolate(located, os.environ if environ is None else environ)
    if located.data is None:
        located.data = {}
    if not isinstance(located.data, dict):
        raise located.error((), "the top level must be a mapping (broker, store, sources, "
                                "sinks, routes)")
    errors: list[ConfigError] = []
    settings = _validate_sections(located, errors)
    root = Path(config_dir).resolve().parent
    secrets = {v for k, v in used.items() if looks_secret(k, env=True)}
    if settings is not None:
        secrets |= collect_secrets(settings)
    remember(secrets)
    config = Config(file=file, root=root, settings=settings or BusSettings(),
                    secrets=frozenset(secrets))
    if settings is not None:
        for section, target in (("sources", config.sources), ("sinks", config.sinks)):
            for name, instance in getattr(settings, section).items():
                built = _instance(section, name, instance, registry, located, errors)
                if built is not None:
                    target[name] = built
        _check_routes(settings, located, errors)
        _check_reconcile(settings, located, errors)
    secrets |= {s for i in (*config.sources.values(), *config.sinks.values())
                for s in collect_secrets(i.config)}
    remember(secrets)
    if errors:
        raise ConfigErrors([_unechoed(e, used) for e in errors])
    return dataclasses.replace(config, secrets=frozenset(secrets))


def _unechoed(error: ConfigError, used: Substituted) -> ConfigError:
    """``error`` without the values ${ENV} references put in (``${NAME}`` instead) and
    without known secrets: an env value is often a password, and a message like
    ``not a duration: '...'`` would echo it."""
    def clean(text: str) -> str:
        for name, value in sorted(used.items(), key=lambda item: -len(item[1])):
            if len(value) >= 3:
                text = text.replace(value, f"${{{name}}}")
        return known().scrub(text)

    error.message = clean(error.message)
    error.args = (error.message,)
    if isinstance(error.context.get("hint"), str):
        error.context["hint"] = clean(error.context["hint"])
    return error


def _validate_sections(located: Located, errors: list[ConfigError]) -> BusSettings | None:
    """Validate section by section (so one bad route does not hide another), then the whole."""
    data: dict[str, Any] = located.data
    before = len(errors)
    for key, value in data.items():
        info = BusSettings.model_fields.get(key)
        if info is None:
            errors.append(located.error((key,), f"unknown key {key!r}", value=False,
                                        hint=did_you_mean(str(key), BusSettings.model_fields)))
            continue
        if key in ("sources", "sinks", "routes") and isinstance(value, dict):
            item_model = ConnectorInstance if key != "routes" else RouteSettings
            for name, item in value.items():
                _collect(item_model, item, (key, name), located, errors)
                if not isinstance(name, str) or not _NAME_RE.match(name):
                    errors.append(located.error((key, name), f"invalid name {name!r}",
                                                value=False, hint=_NAME_HINT))
        else:
            _collect(info.annotation, value, (key,), located, errors)
    unknown = {e.context.get("field") for e in errors[before:]
               if e.message.startswith("unknown key") and e.context.get("field") in data}
    if len(errors) - before > len(unknown):
        return None
    try:  # unknown top-level keys are reported; the rest is still checked further
        return BusSettings.model_validate({k: v for k, v in data.items() if k not in unknown})
    except ValidationError as exc:  # anything the section checks could not see
        errors.extend(validation_errors(exc, located.locator, BusSettings))
        return None


def _collect(model: Any, value: Any, path: Path_, located: Located,
             errors: list[ConfigError]) -> None:
    adapter = TypeAdapter(model)
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        errors.extend(validation_errors(exc, located.locator, model, path))


def _instance(section: str, name: str, instance: ConnectorInstance, registry: Registry,
              located: Located, errors: list[ConfigError]) -> Instance | None:
    path: Path_ = (section, name)
    if instance.connector not in registry:
        errors.append(located.error((*path, "connector"),
                                    f"unknown connector {instance.connector!r}",
                                    hint=did_you_mean(instance.connector, registry.names())))
        return None
    plugin = registry.get(instance.connector)
    model = plugin.source_config if section == "sources" else plugin.sink_config
    if model is None:
        role = "source" if section == "sources" else "sink"
        errors.append(located.error((*path, "connector"),
                                    f"connector {plugin.name!r} has no {role}",
                                    hint=f"{plugin.name}: {plugin.summary}"))
        return None
    options = dict(instance.model_extra or {})
    try:
        config = model.model_validate(options)
    except ValidationError as exc:
        errors.extend(validation_errors(exc, located.locator, model, path))
        return None
    return Instance(name=name, connector=plugin.name, config=config)


def _check_routes(settings: BusSettings, located: Located, errors: list[ConfigError]) -> None:
    if not settings.routes:
        errors.append(located.error(("routes",), "no routes are defined",
                                    hint="add a route: routes: {NAME: {from: [TYPE], to: [SINK]}}"))
    for route_name, route in settings.routes.items():
        for index, sink in enumerate(route.to):
            if sink in settings.sinks:
                continue
            hint = (f"{sink!r} is a source; a route delivers to sinks"
                    if sink in settings.sources else did_you_mean(sink, settings.sinks))
            errors.append(located.error(("routes", route_name, "to", index),
                                        f"no sink named {sink!r}", hint=hint))


def _check_reconcile(settings: BusSettings, located: Located,
                     errors: list[ConfigError]) -> None:
    """``reconcile.erp`` / ``reconcile.shop`` must name a source or a sink."""
    known = {*settings.sources, *settings.sinks}
    for key in ("erp", "shop"):
        name = getattr(settings.reconcile, key)
        if name is not None and name not in known:
            errors.append(located.error(("reconcile", key), f"no source or sink named {name!r}",
                                        hint=did_you_mean(name, known)))
