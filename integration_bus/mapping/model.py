"""Pydantic models of the mapping file and the sidecar test file: the spec of both formats.

They validate the structure (unknown keys are refused with did-you-mean by the loader) and
generate the JSON Schemas editors use (:func:`mapping_file_schema`, :func:`sidecar_file_schema`).
Expressions stay text here; :mod:`.step_compiler` compiles them with their file positions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

__all__ = [
    "STEP_KINDS", "STEP_MODELS", "CheckSpec", "ErrorExpect", "Expect", "FilterSpec", "InputSpec",
    "JsonataSpec", "LookupSpec", "MappingFile", "OutputSpec", "SidecarCase", "SidecarFile",
    "SplitSpec", "ValidateSpec", "mapping_file_schema", "sidecar_file_schema",
]

_EXPR = {"type": "string", "description": "An expression, e.g. \"sku | trim | upper\"."}
_FIELD_SPEC_SCHEMA: dict[str, Any] = {
    "$comment": "A field: an expression, a constant, a nested object, a list, or a directive.",
    "anyOf": [
        _EXPR,
        {"type": ["integer", "boolean", "null"]},
        {"type": "array", "items": {"$ref": "#/$defs/FieldSpec"}},
        {
            "type": "object",
            "description": "A directive: $value/$when (conditional field) or $each/$map/$where.",
            "properties": {
                "$value": {"$ref": "#/$defs/FieldSpec"},
                "$when": _EXPR,
                "$each": _EXPR,
                "$map": {"$ref": "#/$defs/FieldSpec"},
                "$where": _EXPR,
            },
            "additionalProperties": False,
            "minProperties": 1,
        },
        {
            "type": "object",
            "description": "A nested object; a key ending in '?' is left out when its value is "
                           "null.",
            "propertyNames": {"pattern": "^[^$]"},
            "additionalProperties": {"$ref": "#/$defs/FieldSpec"},
        },
    ],
}
_PLACEHOLDER = "integration-bus:FieldSpec"
ObjectSpec = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "additionalProperties": {"$comment": _PLACEHOLDER},
                    "description": "Output fields: name -> field spec."}),
]
FieldSpecValue = Annotated[Any, WithJsonSchema({"$comment": _PLACEHOLDER})]
Expr = Annotated[str, Field(min_length=1, json_schema_extra={"description": _EXPR["description"]})]
SchemaRef = Annotated[str, Field(pattern=r"^[a-z0-9_][a-z0-9_.-]*@[0-9]+$",
                                 description="A schema reference name@version.")]
MessageType = Annotated[str, Field(pattern=r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    type: MessageType | list[MessageType] | None = Field(
        None, description="Message type(s) this mapping accepts; others are refused.")
    schema_: SchemaRef | None = Field(None, alias="schema", description="Input JSON Schema.")
    validate_: bool = Field(True, alias="validate",
                            description="Validate input against the schema before the steps.")


class OutputSpec(_Strict):
    type: MessageType = Field(description="Message type of the output envelopes.")
    schema_: SchemaRef | None = Field(
        None, alias="schema",
        description="Output JSON Schema: outputs are conformed (decimals as text or exact numbers "
                    "as it says) and validated.")
    key: Expr | None = Field(
        None, description="Business key of each output (an expression over the output, e.g. "
                          "\"sale_id\"): its idempotency key becomes '<output type>:<value>' "
                          "instead of one derived from the input's, so the same business event "
                          "arriving again under another key (a re-exported file, a repeated "
                          "export) is recognised by the ledger downstream.")


class FilterSpec(_Strict):
    when: Expr = Field(description="Keep the document when this is true; drop it otherwise.")


class CheckSpec(_Strict):
    that: Expr = Field(description="A business rule that must be true (e.g. the order's money "
                                   "adds up); else the input is a business dead letter "
                                   "(CheckFailed) naming every field the rule reads.")
    each: Expr | None = Field(None, description="A list: the rule is checked for every item "
                                                "(bare names are the item's fields).")
    message: Expr | None = Field(None, description="An expression giving the error's text, "
                                                   "evaluated only when the rule fails.")


class SplitSpec(_Strict):
    each: Expr = Field(description="A list; every item becomes its own output.")
    map: FieldSpecValue = Field(None, description="Optional field spec built for every item.")


class LookupSpec(_Strict):
    key: Expr = Field(description="Expression giving the value to look up.")
    into: str = Field(min_length=1, description="Field path that receives the result.")
    table: str | None = Field(None, description="xref table name (mappings/xref/NAME.csv|yaml).")
    column: str | None = Field(None, description="Value column of a multi-column table.")
    resolver: str | None = Field(None, description="Name of a lookup the runtime provides.")
    default: str | int | bool | None = Field(
        None, description="Value used on a miss (a miss is an error when this key is absent).")


class ValidateSpec(_Strict):
    schema_: SchemaRef = Field(alias="schema")


class JsonataSpec(_Strict):
    expression: str = Field(min_length=1)
    timeout_ms: int = Field(1000, ge=1, le=60_000)
    max_depth: int = Field(200, ge=1, le=10_000)


STEP_KINDS: dict[str, Any] = {
    "map": ObjectSpec,
    "set": ObjectSpec,
    "rename": dict[str, str],
    "drop": list[str],
    "filter": Expr | FilterSpec,
    "split": SplitSpec,
    "lookup": LookupSpec,
    "validate": SchemaRef | ValidateSpec,
    "jsonata": str | JsonataSpec,
    "check": Expr | CheckSpec,
}


def _step_model(kind: str, body: Any) -> type[BaseModel]:
    from pydantic import create_model

    model: type[BaseModel] = create_model(
        f"{kind.capitalize()}Step", __config__=ConfigDict(extra="forbid"),
        name=(str | None, Field(None, description="Optional step name used in errors.")),
        body=(body, Field(alias=kind)),
    )
    return model


class MappingFile(_Strict):
    """A mapping file: ``mappings/**/NAME.yaml``."""

    name: str | None = Field(None, pattern=r"^[a-z0-9_][a-z0-9_.-]*$",
                             description="Mapping name (defaults to the file name).")
    description: str | None = None
    input: InputSpec = Field(default_factory=InputSpec)
    output: OutputSpec
    steps: list[dict[str, Any]] = Field(min_length=1, description="Ordered steps.")


class ErrorExpect(_Strict):
    type: str = Field(description="Error class name, e.g. MappingError.")
    field: str | None = Field(None, description="The output field (or schema path) named.")
    step: str | None = None
    path: str | None = Field(None, description="The input path named.")
    message: str | None = Field(None, description="Text the message must contain.")


class Expect(_Strict):
    output: Any = Field(None, description="The single output payload, exactly.")
    outputs: list[Any] | None = Field(None,
                                      description="All output payloads, exactly ([] = filtered).")
    subset: Any = Field(None, description="Fields the single output must contain (deep subset).")
    count: int | None = Field(None, ge=0, description="Number of outputs.")
    keys: list[str] | None = Field(None, description="The outputs' idempotency keys, in order "
                                                    "(with output.key: '<type>:<business key>').")
    error: ErrorExpect | None = None


class SidecarCase(_Strict):
    name: str = Field(min_length=1)
    input: Any = Field(None, description="Input payload.")
    input_file: str | None = Field(None, description="JSON file with the input payload.")
    type: str | None = Field(None, description="Input message type (default: the mapping's).")
    headers: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    expect: Expect


class SidecarFile(_Strict):
    """A sidecar test file: ``NAME_test.yaml`` next to ``NAME.yaml``."""

    mapping: str | None = Field(None, description="Mapping file (default: NAME.yaml beside it).")
    cases: list[SidecarCase] = Field(min_length=1)


def mapping_file_schema() -> dict[str, Any]:
    """JSON Schema of mapping files (editors: yaml-language-server ``$schema`` comment)."""
    schema: dict[str, Any] = MappingFile.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    defs["FieldSpec"] = _FIELD_SPEC_SCHEMA
    steps = []
    for kind, model in STEP_MODELS.items():
        step_schema = model.model_json_schema(by_alias=True,
                                                                ref_template="#/$defs/{model}")
        defs.update(step_schema.pop("$defs", {}))
        step_schema["title"] = f"{kind} step"
        steps.append(step_schema)
    defs["Step"] = {"oneOf": steps}
    schema["properties"]["steps"]["items"] = {"$ref": "#/$defs/Step"}
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = "integration-bus mapping file"
    linked: dict[str, Any] = _link_field_specs(schema)
    return linked


def _link_field_specs(node: Any) -> Any:
    """Replace the placeholders left by ``WithJsonSchema`` with refs to ``$defs/FieldSpec``."""
    if isinstance(node, dict):
        if node.get("$comment") == _PLACEHOLDER:
            return {"$ref": "#/$defs/FieldSpec"}
        return {k: _link_field_specs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_link_field_specs(v) for v in node]
    return node


def sidecar_file_schema() -> dict[str, Any]:
    """JSON Schema of sidecar test files (``*_test.yaml``)."""
    schema = SidecarFile.model_json_schema(by_alias=True)
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = "integration-bus mapping test file"
    return schema


StepKind = Literal["map", "set", "rename", "drop", "filter", "split", "lookup", "validate",
                   "jsonata", "check"]
STEP_MODELS: dict[str, type[BaseModel]] = {kind: _step_model(kind, body)
                                           for kind, body in STEP_KINDS.items()}
