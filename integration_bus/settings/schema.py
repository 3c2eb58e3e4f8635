"""The JSON Schema of ``bus.yaml``, generated from the pydantic models and the connector plugins'
config models, so an editor validates each source and sink by its ``connector``."""

from __future__ import annotations

from typing import Any

from integration_bus.registry import Registry
from integration_bus.settings.models import BusSettings

__all__ = ["bus_config_schema"]


def bus_config_schema(registry: Registry) -> dict[str, Any]:
    schema = BusSettings.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    for role in ("source", "sink"):
        variants = []
        for name in registry.names():
            plugin = registry.get(name)
            model = plugin.source_config if role == "source" else plugin.sink_config
            if model is None:
                continue
            # Each plugin's own models under its name: two plugins may both have a PollConfig.
            sub = model.model_json_schema(by_alias=True,
                                          ref_template=f"#/$defs/{name}.{{model}}")
            defs.update({f"{name}.{k}": v for k, v in sub.pop("$defs", {}).items()})
            sub.setdefault("properties", {})["connector"] = {
                "const": name, "description": plugin.summary}
            sub["required"] = ["connector", *sub.get("required", [])]
            sub["additionalProperties"] = False
            sub["title"] = f"{name} {role}"
            variants.append(sub)
        defs[f"{role.capitalize()}Instance"] = {"oneOf": variants}
        section = schema["properties"][f"{role}s"]
        for pattern in section.get("patternProperties", {}):
            section["patternProperties"][pattern] = {
                "$ref": f"#/$defs/{role.capitalize()}Instance"}
    for section in ("sources", "sinks", "routes"):
        schema["properties"][section]["additionalProperties"] = False  # names must match
    defs.pop("ConnectorInstance", None)
    _allow_interpolation(schema)
    defs["Interpolated"] = {
        "type": "string", "pattern": _INTERPOLATED,
        "description": "${ENV} or ${ENV:-default}: checked against the field once resolved"}
    schema["title"] = "integration-bus bus.yaml"
    return schema


#: a value holding ``${NAME}`` or ``${NAME:-default}`` (see settings/interpolate.py)
_INTERPOLATED = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"
_KEEP = {"connector"}  # discriminates the connector variants: never interpolated


def _allow_interpolation(node: Any) -> None:
    """Let every property also be an ``${ENV}`` string: the loader resolves it before the real
    check, so an editor must not flag ``port: ${PORT:-8088}`` as "not an integer"."""
    if isinstance(node, list):
        for item in node:
            _allow_interpolation(item)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _allow_interpolation(value)
    items = node.get("items")
    interpolated = {"$ref": "#/$defs/Interpolated"}
    if isinstance(items, dict) and interpolated not in items.get("anyOf", []):
        node["items"] = {"anyOf": [items, interpolated]}  # list items: ["${A}", "${B:-x}"]
    properties = node.get("properties")
    if isinstance(properties, dict):
        for key, prop in list(properties.items()):
            if key in _KEEP or not isinstance(prop, dict):
                continue
            wrapped: dict[str, Any] = {k: prop[k] for k in ("title", "description", "default")
                                       if k in prop}
            wrapped["anyOf"] = [prop, interpolated]
            properties[key] = wrapped
