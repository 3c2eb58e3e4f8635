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
            sub = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
            defs.update(sub.pop("$defs", {}))
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
    schema["title"] = "integration-bus bus.yaml"
    return schema
