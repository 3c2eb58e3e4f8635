"""Element paths of the config (``DocumentHeader.ExternalReference``) checked against the WSDL.

A sink or source names places in a request or a response by dotted paths: the document number's
field, the lookup's reference and ``found``, the poll's cursor, page size, items, position and
``more``. :func:`check_path` walks such a path through the operation's message types to the leaf
when the sink or source is built (so at start-up and in ``bus lint --build``): a step that the
types do not have is a ConfigError naming the step, what is there, and a did-you-mean. Where the
types are open (``xsd:any``, ``xsd:anyType``) nothing more can be said and the rest is accepted.

For rpc operations a request is keyed by what zeep sends: a part's name when the part has a
``type``, its element's name when the part has an ``element``. :func:`parameter_hint` says which
key is expected when a request (or a path) uses the part name instead.
"""

from __future__ import annotations

from typing import Any

from zeep.xsd.elements.any import Any as AnyElement
from zeep.xsd.types.any import AnyType
from zeep.xsd.types.complex import ComplexType
from zeep.xsd.types.simple import AnySimpleType

from integration_bus.connector import ConfigError, did_you_mean

__all__ = ["check_path", "parameter_hint", "parameters", "unknown_parameter_hint"]

_OPEN = None  # children of an open content model: anything may be there


def parameters(message: Any) -> dict[str, Any] | None:
    """The elements directly under a message's body (its parameters), by name; None when the
    body is open (``xsd:any``)."""
    body = getattr(message, "body", None) if message is not None else None
    return _children(body.type) if body is not None else {}


def _children(xsd_type: Any) -> dict[str, Any] | None:
    if isinstance(xsd_type, AnySimpleType):  # (an AnyType too, in zeep)
        return {}
    if not isinstance(xsd_type, ComplexType):
        return _OPEN if isinstance(xsd_type, AnyType) else {}
    found: dict[str, Any] = {}
    for name, element in xsd_type.elements:
        if isinstance(element, AnyElement):
            return _OPEN
        found[name] = element
    return found


def _type_name(element: Any) -> str:
    qname = getattr(element.type, "qname", None)
    return getattr(qname, "localname", None) or type(element.type).__name__


def check_path(message: Any, path: str, *, operation: str, field: str,
               direction: str = "request", within: Any = None) -> Any:
    """Resolve ``path`` (dotted) in ``message`` (zeep's input or output message of
    ``operation``), or inside the element ``within`` of it, to its leaf element (None where the
    types are open). Raises ConfigError (``field``: the config field holding the path) at the
    first step that does not exist."""
    children = parameters(message) if within is None else _children(within.type)
    walked: list[str] = []
    element: Any = None
    parent: Any = None
    for step in path.split("."):
        if children is _OPEN:
            return None
        element = children.get(step)
        if element is None:
            where = ".".join(walked)
            if where:
                what = f"{where} ({_type_name(parent)})" if parent is not None else where
                problem = (f"{what} is a simple value: it has no element {step!r}"
                           if not children else f"{what} has no element {step!r}")
            elif within is not None:
                problem = f"{within.name} ({_type_name(within)}) in the {direction} of " \
                          f"{operation} has no element {step!r}"
            else:
                problem = f"the {direction} of {operation} has no parameter {step!r}"
            hint = did_you_mean(step, children) if children else None
            alias = parameter_hint(message, step) if not walked and within is None else None
            raise ConfigError(f"{path!r}: {problem}", field=field, hint=alias or hint)
        walked.append(step)
        parent = element
        children = _children(element.type)
    return element


def parameter_hint(message: Any, key: str) -> str | None:
    """For an rpc message: when ``key`` is the name of a part that zeep sends as its element
    (``<part name="parameters" element="tns:Order"/>``), which key to write instead."""
    abstract = getattr(message, "abstract", None)
    parts = getattr(abstract, "parts", None) or {}
    part = parts.get(key)
    element = getattr(part, "element", None)
    if element is not None and element.name != key:
        return (f"part {key!r} is sent as its element {element.name!r}: key the request by "
                f"{element.name!r}")
    return None


def unknown_parameter_hint(message: Any, key: str) -> str | None:
    """What to write instead of the request key ``key`` that ``message`` does not take."""
    names = parameters(message)
    if names is _OPEN:
        return None
    return parameter_hint(message, key) or did_you_mean(key, names) or \
        (f"parameters: {', '.join(names)}" if names else "the operation takes no parameters")
