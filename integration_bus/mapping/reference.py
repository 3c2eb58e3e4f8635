"""A straightforward interpreter of mapping files: the executable specification of the language.

It walks the syntax tree and the raw step data on every call — slow and obvious — and exists so
the property tests can check that the compiled closures (with their fast paths and
specialisations) compute exactly the same outputs and raise the same errors. It shares only the
value semantics (:mod:`.values`, :mod:`.ops`) and the function implementations with the compiler.
"""

from __future__ import annotations

import copy
import decimal
from functools import partial
from typing import Any

from integration_bus.errors import MappingError
from integration_bus.mapping import nodes as n
from integration_bus.mapping.check_failure import check_failure, figure_paths
from integration_bus.mapping.conform import plain_json
from integration_bus.mapping.context import get_field, get_index, get_wild
from integration_bus.mapping.functions import UNKNOWN, BindContext, FunctionRegistry
from integration_bus.mapping.grammar import Parser
from integration_bus.mapping.jsonata_step import JsonataProgram
from integration_bus.mapping.ops import apply_binary, apply_unary
from integration_bus.mapping.validation import SchemaStore
from integration_bus.mapping.values import DECIMAL_CONTEXT, to_text, truthy, type_name

__all__ = ["ReferenceInterpreter"]

_FAILURES = (TypeError, ValueError, ArithmeticError, LookupError)


class ReferenceInterpreter:
    """Interprets one mapping file's data (as read from YAML) without compiling it."""

    def __init__(self, data: dict[str, Any], *, registry: FunctionRegistry, bind: BindContext,
                 schemas: SchemaStore) -> None:
        self.data = data
        self.registry = registry
        self.bind = bind
        self.schemas = schemas
        self.parser = Parser()

    def run(self, payload: Any, meta: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
        """Same contract as :meth:`CompiledMapping.run`."""
        env = {"input": payload, "meta": meta or {}, "index": None, "doc": payload}
        with decimal.localcontext(DECIMAL_CONTEXT):
            input_spec = self.data.get("input") or {}
            if input_spec.get("schema") and input_spec.get("validate", True):
                self.schemas.get(input_spec["schema"]).validate(payload)
            docs = [("", payload)]
            for step in self.data["steps"]:
                kind = next(k for k in step if k != "name")
                docs = [out for suffix, doc in docs for out in self._step(kind, step[kind], doc,
                                                                          suffix, env)]
            out_ref = self.data["output"].get("schema")
            results = []
            for suffix, doc in docs:
                if out_ref:
                    schema = self.schemas.get(out_ref)
                    doc = schema.conform(doc)
                    schema.validate(doc)
                else:
                    doc = plain_json(doc)
                results.append((suffix, doc))
            return results

    def _step(self, kind: str, body: Any, doc: Any, suffix: str,
              env: dict[str, Any]) -> list[tuple[str, Any]]:
        env["doc"] = doc
        if kind == "map":
            return [(suffix, self.spec(body, doc, env))]
        if kind == "filter":
            text = body if isinstance(body, str) else body["when"]
            return [(suffix, doc)] if truthy(self.expr(text, doc, env)) else []
        if kind == "split":
            items = self.expr(body["each"], doc, env)
            if items is None:
                return []
            if not isinstance(items, list):
                raise MappingError(f"split needs a list, got {type_name(items)}")
            out = []
            for index, item in enumerate(items):
                env["index"], env["doc"] = index, doc
                value = item if body.get("map") is None else self.spec(body["map"], item, env)
                out.append((f"{suffix}/{index}" if suffix else str(index), value))
            env["index"] = None
            return out
        if kind == "set":
            for target, spec in body.items():
                doc = self._assign(doc, target, spec, env)
                env["doc"] = doc
            return [(suffix, doc)]
        if kind == "lookup":
            call = "xref" if body.get("table") else "lookup"
            name = body.get("table") or body.get("resolver")
            if body.get("column"):
                name = f"{name}.{body['column']}"
            args = (UNKNOWN, name, body["default"]) if "default" in body else (UNKNOWN, name)
            spec = self.registry.get(call)
            assert spec is not None and spec.bind is not None
            impl = spec.bind(self.bind, args)

            def value(scope: Any) -> Any:
                key = self.expr(body["key"], scope, env)
                return None if key is None else impl(key, name, body.get("default"))

            return [(suffix, self._assign(doc, body["into"], value, env))]
        if kind in ("rename", "drop"):
            targets = body.items() if kind == "rename" else [(t, None) for t in body]
            for target, new in targets:
                doc = self._remove(doc, self._segments(target), new)
            return [(suffix, doc)]
        if kind == "validate":
            schema = self.schemas.get(body if isinstance(body, str) else body["schema"])
            doc = schema.conform(doc)
            schema.validate(doc)
            return [(suffix, doc)]
        if kind == "check":
            self._check({"that": body} if isinstance(body, str) else body, doc, env)
            return [(suffix, doc)]
        spec = {"expression": body} if isinstance(body, str) else body
        program = JsonataProgram(spec["expression"], timeout_ms=spec.get("timeout_ms", 1000),
                                 max_depth=spec.get("max_depth", 200))
        return [(suffix, program(doc))]

    def _check(self, body: dict[str, Any], doc: Any, env: dict[str, Any]) -> None:
        items: list[tuple[int | None, Any]] = [(None, doc)]
        if body.get("each") is not None:
            found = self.expr(body["each"], doc, env)
            if found is None:
                return
            if not isinstance(found, list):
                raise MappingError(f"check each needs a list, got {type_name(found)}")
            items = list(enumerate(found))
        rule = self.parser.parse(body["that"])
        for index, item in items:
            env["index"] = index
            if truthy(self.eval(rule, item, env)):
                continue
            text = None if body.get("message") is None else \
                to_text(self.expr(body["message"], item, env), "check message")
            raise check_failure(body["that"], text, [
                (label, partial(self.eval, path, item, env))
                for label, path in figure_paths(rule)])
        env["index"] = None

    def _segments(self, target: str) -> list[n.Segment]:
        node = self.parser.parse(target)
        assert isinstance(node, n.Path)
        return list(node.segments)

    def _assign(self, doc: Any, target: str, spec: Any, env: dict[str, Any]) -> Any:
        """Deep-copy the document, then set the target everywhere it applies."""
        new = copy.deepcopy(doc)
        segments = self._segments(target)

        def walk(value: Any, rest: list[n.Segment], scope: Any) -> Any:
            head = rest[0]
            if isinstance(head, n.Wild):
                if value is None:
                    return None
                if not isinstance(value, list):
                    raise MappingError(f"[*] needs a list, got {type_name(value)}")
                for index, item in enumerate(value):
                    env["index"] = index
                    value[index] = walk(item, rest[1:], item)
                return value
            assert isinstance(head, n.Field)
            if value is None:
                value = {}
            if not isinstance(value, dict):
                if len(rest) == 1:
                    raise MappingError(f"cannot change a field of a {type_name(value)}")
                raise MappingError(f"cannot read field {head.name!r} of a {type_name(value)}")
            if len(rest) == 1:
                if callable(spec):
                    value[head.name] = spec(scope)
                else:
                    value[head.name] = self.spec(spec, scope, env)
            else:
                value[head.name] = walk(value.get(head.name), rest[1:], scope)
            return value

        saved = env["index"]
        try:
            return walk(new, segments, doc)
        finally:
            env["index"] = saved

    def _remove(self, doc: Any, segments: list[n.Segment], new_name: str | None) -> Any:
        new = copy.deepcopy(doc)

        def walk(value: Any, rest: list[n.Segment]) -> None:
            head = rest[0]
            if value is None:
                return
            if isinstance(head, n.Wild):
                if not isinstance(value, list):
                    raise MappingError(f"[*] needs a list, got {type_name(value)}")
                for item in value:
                    walk(item, rest[1:])
                return
            assert isinstance(head, n.Field)
            if not isinstance(value, dict):
                if len(rest) == 1:
                    raise MappingError(f"cannot change a field of a {type_name(value)}")
                raise MappingError(f"cannot read field {head.name!r} of a {type_name(value)}")
            if len(rest) > 1:
                walk(value.get(head.name), rest[1:])
            elif head.name in value:
                moved = value.pop(head.name)
                if new_name is not None:
                    value[new_name] = moved

        walk(new, segments)
        return new

    # --- field specs ---

    def spec(self, spec: Any, cur: Any, env: dict[str, Any]) -> Any:
        if isinstance(spec, str):
            return self.expr(spec, cur, env)
        if spec is None or isinstance(spec, bool | int):
            return spec
        if isinstance(spec, list):
            return [self.spec(item, cur, env) for item in spec]
        if any(key.startswith("$") for key in spec):
            if "$value" in spec:
                return self.spec(spec["$value"], cur, env)
            items = self.expr(spec["$each"], cur, env)
            if items is None:
                return []
            if not isinstance(items, list):
                raise MappingError(f"$each needs a list, got {type_name(items)}")
            out, saved = [], env["index"]
            for index, item in enumerate(items):
                env["index"] = index
                if "$where" in spec and not truthy(self.expr(spec["$where"], item, env)):
                    continue
                out.append(self.spec(spec["$map"], item, env) if "$map" in spec else item)
            env["index"] = saved
            return out
        result = {}
        for key, sub in spec.items():
            name, omit = (key[:-1], True) if key.endswith("?") else (key, False)
            if isinstance(sub, dict) and "$when" in sub:
                if not truthy(self.expr(sub["$when"], cur, env)):
                    continue
                sub = {k: v for k, v in sub.items() if k != "$when"}
            value = self.spec(sub, cur, env)
            if value is None and omit:
                continue
            result[name] = value
        return result

    # --- expressions ---

    def expr(self, text: str, cur: Any, env: dict[str, Any]) -> Any:
        return self.eval(self.parser.parse(text), cur, env)

    def eval(self, node: n.Node, cur: Any, env: dict[str, Any]) -> Any:
        if isinstance(node, n.Lit):
            return node.value
        if isinstance(node, n.ListLit):
            return [self.eval(item, cur, env) for item in node.items]
        if isinstance(node, n.Var):
            return {"$": env["doc"], "$this": cur, "$index": env["index"], "$input": env["input"],
                    "$meta": env["meta"]}[node.name]
        if isinstance(node, n.Path):
            value = cur if node.base is None else self.eval(node.base, cur, env)
            return _walk(value, list(node.segments))
        if isinstance(node, n.Unary):
            return apply_unary(node.op, self.eval(node.operand, cur, env))
        if isinstance(node, n.Binary):
            return apply_binary(node.op, self.eval(node.left, cur, env),
                                self.eval(node.right, cur, env))
        if isinstance(node, n.Logic):
            left = truthy(self.eval(node.left, cur, env))
            if node.op == "and":
                return left and truthy(self.eval(node.right, cur, env))
            return left or truthy(self.eval(node.right, cur, env))
        if isinstance(node, n.Cond):
            branch = node.then if truthy(self.eval(node.test, cur, env)) else node.other
            return self.eval(branch, cur, env)
        return self._call(node, cur, env)

    def _call(self, node: n.Call, cur: Any, env: dict[str, Any]) -> Any:
        spec = self.registry.get(node.name)
        assert spec is not None
        impl = spec.impl
        if spec.bind is not None:
            impl = spec.bind(self.bind, tuple(a.value if isinstance(a, n.Lit) else UNKNOWN
                                              for a in node.args))
        subject = self.eval(node.args[0], cur, env)
        if subject is None and spec.null_passes:
            return None
        try:
            return impl(subject, *[self.eval(a, cur, env) for a in node.args[1:]])
        except MappingError:
            raise
        except _FAILURES as exc:
            raise MappingError(f"{node.name}(): {exc}") from exc


def _walk(value: Any, segments: list[n.Segment]) -> Any:
    if not segments:
        return value
    head, rest = segments[0], segments[1:]
    if isinstance(head, n.Field):
        return _walk(get_field(value, head.name), rest)
    if isinstance(head, n.Index):
        return _walk(get_index(value, head.index), rest)
    items = get_wild(value)
    if any(isinstance(s, n.Wild) for s in rest):
        return [x for item in items for x in _walk(item, rest)]
    return [_walk(item, rest) for item in items]
