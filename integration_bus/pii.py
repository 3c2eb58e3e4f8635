"""Personal data: found by key name, by configured path and by pattern in text; masked when shown.

The built-in list (``dead_letters.redact_builtin``, on by default) masks, at any depth:

- **contact**: keys containing ``email``, ``phone``, ``mobile``, ``telephone``, ``fax``;
- **names**: ``first_name``, ``last_name``, ``full_name``, given/family/middle name, surname,
  card holder, ``customer_name``...; ``name`` itself inside a customer, contact, recipient,
  billing or shipping object;
- **addresses**: keys containing ``address`` or ``street``, postcodes and zip codes, and every
  value inside an address object (``billing_address``, ``shipping``, ``billing``...) except
  its country, province, state and region;
- **payment**: card numbers, CVV/CVC, security codes, card expiry, IBAN, account, routing
  and sort codes;
- **identity**: date of birth, social security and national ids, passports, IP addresses.

In text (error messages, tracebacks, raw bodies, attempt history, journal detail, and every
string of a payload) it masks emails, phone numbers written as phone numbers (a leading ``+``
or groups with separators), card numbers passing the Luhn check, IBANs passing mod-97, and
the value of ``"key": "value"``, ``key=value`` or ``<Key>value</Key>`` for the keys above.

Configured paths (``dead_letters.redact``: ``customer.email``, ``lines[*].card``, ``*.x``,
``**.iban``) mask more fields of a payload. An email keeps its first letter and its domain;
numbers keep their last four characters; names, addresses and identity data keep nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

__all__ = ["PersonalData", "mask", "unecho", "unecho_data"]

MASK = "***"

# -- by key name ---------------------------------------------------------------------------------
_EMAIL_KEY = re.compile(r"email")
_NUMBER_KEY = re.compile(
    r"phone|mobile|telephone|^tel$|^fax|whatsapp|cardnumber|creditcard|^cc(number|num)?$|"
    r"^pan$|cvv|cvc|securitycode|iban|accountnumber|bankaccount|routingnumber|sortcode|"
    r"cardexpiry|expirydate|expirationdate|^exp(month|year)$")
_FULL_KEY = re.compile(
    r"firstname|lastname|fullname|givenname|familyname|surname|middlename|maidenname|"
    r"nameoncard|cardholder|holdername|^(customer|contact|recipient|buyer|billing|shipping|"
    r"consignee|payer|user|account|owner|person)name$|dateofbirth|birthdate|birthday|^dob$|"
    r"^ssn$|socialsecurity|nationalid|passport|ipaddress|^(browser|client|customer|remote)ip$")
_ADDRESS_KEY = re.compile(r"address|street|postcode|postalcode|zipcode|^zip$")
_PERSON = frozenset({"customer", "contact", "recipient", "buyer", "consignee", "payer",
                     "person", "cardholder", "owner", "user", "client", "member", "patron"})
_ADDRESS_OBJECTS = frozenset({"billing", "shipping", "billto", "shipto", "delivery", "destination"})
_KEPT_IN_ADDRESS = re.compile(r"^(country|province|state|region)|^(id|type|default)$")


def _normal(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


@functools.lru_cache(maxsize=8192)
def _kind(key: str, in_person: bool) -> str | None:
    """How a value under ``key`` is masked: email, number, full, address; None: not personal."""
    k = _normal(key)
    if _EMAIL_KEY.search(k):
        return "email"
    if _NUMBER_KEY.search(k):
        return "number"
    if _FULL_KEY.search(k) or (in_person and k in ("name", "displayname")):
        return "full"
    if _ADDRESS_KEY.search(k):
        return "address"
    return None


def mask(value: Any, kind: str = "partial") -> Any:
    """A masked copy of a scalar: emails keep their first letter and domain; ``number`` and
    ``partial`` keep the last four characters of values longer than six; ``full`` keeps
    nothing. None and booleans stay as they are."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value)
    if kind in ("email", "partial") and "@" in text:
        local, _, domain = text.rpartition("@")
        return f"{local[:1]}{MASK}@{domain}"
    if kind in ("number", "partial", "email"):
        return f"{MASK}{text[-4:]}" if len(text) > 6 else MASK
    return MASK


# -- in text -------------------------------------------------------------------------------------
_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                    r"\.[A-Za-z]{2,}\b")
_PHONE = re.compile(  # international (+...), with a trunk 0, an area code in parentheses, NANP
    r"(?:(?<![\w+])\+[1-9]\d{0,3}(?:[ .\-/]?\(?\d{1,5}\)?){1,6}"
    r"|(?<![\w.+/:-])(?:0\d{1,4}(?:[ -]\d{2,5}){2,4}|0\d{1,4}[ -]\d{5,8}"
    r"|\(\d{2,5}\)[ -]?\d{2,4}(?:[ -]\d{2,5}){0,3}|\d{3}([-. ])\d{3}\1\d{4}|\d{3}-\d{4}))"
    r"(?!\w|[:/-]|\.\d)")
_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$|^\d{1,2}-\d{1,2}-\d{4}$")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_KEYED = re.compile(
    r"(?P<q>[\"'])(?P<key>[A-Za-z_][\w-]{0,60})(?P=q)\s*[:=]\s*"
    r"(?:(?P<vq>[\"'])(?P<val>(?:\\.|(?!(?P=vq))[^\\])*)(?P=vq)|(?P<num>-?\d[\d.]*))"
    r"|<(?P<tag>(?:[\w.-]+:)?(?P<local>[\w.-]+))(?:\s[^<>]*)?>(?P<inner>[^<]{1,512})</(?P=tag)>"
    r"|(?<![\w.-])(?P<pkey>[A-Za-z_][\w-]{0,60})=(?P<pval>[^\s&,;'\"<>]+)")


# every pattern above needs one of these: text without any is left alone at once
_MAYBE = re.compile(r"[@=<\"']|\d.*\d.*\d")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        n = int(char)
        if index % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if not 7 <= digits <= 15 or _DATE.match(text):
        return text
    return str(mask(text, "number"))


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return f"{MASK}{digits[-4:]}" if _luhn(digits) else match.group(0)


def _keyed(match: re.Match[str]) -> str:
    whole = match.group(0)
    if match["key"] is not None:
        kind = _kind(match["key"], False)
        value = match["val"] if match["val"] is not None else match["num"]
        start, end = match.span("val") if match["val"] is not None else match.span("num")
    elif match["local"] is not None:
        kind, value = _kind(match["local"], False), match["inner"]
        start, end = match.span("inner")
    else:
        kind, value = _kind(match["pkey"], False), match["pval"]
        start, end = match.span("pval")
    if kind is None or not value:
        return whole
    offset = match.start()
    return whole[:start - offset] + str(mask(value, kind)) + whole[end - offset:]


# -- configured paths ------------------------------------------------------------------------------
_SEGMENT = re.compile(r"\[\*\]|\[(\d+)\]|([^.\[\]]+)")


def _parse(path: str) -> tuple[str, ...]:
    return tuple("*" if m.group(0) == "[*]" else (m.group(1) or m.group(2))
                 for m in _SEGMENT.finditer(path))


def _at_path(node: Any, path: tuple[str, ...]) -> Any:
    if not path:
        return _every_leaf(node, lambda v: mask(v))
    head, rest = path[0], path[1:]
    if head == "**":
        node = _at_path(node, rest)
        if isinstance(node, dict):
            return {k: _at_path(v, path) for k, v in node.items()}
        if isinstance(node, list):
            return [_at_path(v, path) for v in node]
        return node
    if isinstance(node, dict):
        return {k: (_at_path(v, rest) if head in ("*", k) else v) for k, v in node.items()}
    if isinstance(node, list):
        if head == "*":
            return [_at_path(v, rest) for v in node]
        if head.isdigit() and int(head) < len(node):
            copy = list(node)
            copy[int(head)] = _at_path(copy[int(head)], rest)
            return copy
    return node


def _every_leaf(node: Any, leaf: Callable[[Any], Any]) -> Any:
    if isinstance(node, Mapping):
        return {k: _every_leaf(v, leaf) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_every_leaf(v, leaf) for v in node]
    return leaf(node)


class PersonalData:
    """Masks personal data: the built-in list (unless ``builtin=False``) plus ``paths``."""

    def __init__(self, paths: Sequence[str] = (), *, builtin: bool = True) -> None:
        self.paths = [_parse(p) for p in paths if p.strip()]
        self.builtin = builtin

    @staticmethod
    def default() -> PersonalData:
        """The built-in list alone (logs, and stores built without a configuration)."""
        return _DEFAULT

    def __bool__(self) -> bool:
        return self.builtin or bool(self.paths)

    def text(self, text: str) -> str:
        """Free text (a message, a traceback, a raw body that is not JSON) with its personal
        data masked."""
        if not self.builtin or not text or not _MAYBE.search(text):
            return text
        text = _KEYED.sub(_keyed, text)
        if "@" in text:
            text = _EMAIL.sub(lambda m: str(mask(m.group(0), "email")), text)
        text = _IBAN.sub(lambda m: f"{MASK}{m.group(0).replace(' ', '')[-4:]}"
                         if _iban_ok(m.group(0)) else m.group(0), text)
        text = _CARD.sub(_card, text)
        return _PHONE.sub(_phone, text)

    def data(self, value: Any) -> Any:
        """A masked copy of a JSON-like value (keys of the built-in list, text in strings)."""
        if not self.builtin:
            return value
        return self._walk(value, False)

    def payload(self, document: Any) -> Any:
        """A payload: the configured paths, then the built-in list."""
        for path in self.paths:
            document = _at_path(document, path)
        return self.data(document)

    def echoes(self, document: Any) -> dict[str, str]:
        """Each value ``payload(document)`` masks -> its masked form, to mask the same values
        where an error message, a traceback or the journal repeats them (``'5550100' does not
        match ...``, ``no customer Jane``) whatever their format."""
        found: dict[str, str] = {}
        _differences(document, self.payload(document), found)
        return {k: v for k, v in found.items() if len(k) >= 3}

    def raw(self, text: str) -> str:
        """A raw body: masked as data if it is JSON, else as text."""
        if not self.builtin:
            return text
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self.text(text)
        if not isinstance(parsed, dict | list):
            return self.text(text)
        return orjson.dumps(self.payload(parsed)).decode()

    def _walk(self, node: Any, in_person: bool) -> Any:
        if isinstance(node, str):
            return self.text(node)
        if isinstance(node, Mapping):
            out = {}
            for key, value in node.items():
                kind = _kind(key, in_person) if isinstance(key, str) else None
                name = _normal(key) if isinstance(key, str) else ""
                if kind is None and name in _ADDRESS_OBJECTS and isinstance(value, dict | list):
                    kind = "address"
                out[key] = (self._walk(value, name in _PERSON) if kind is None
                            else _masked(value, kind))
            return out
        if isinstance(node, list | tuple):
            return [self._walk(v, in_person) for v in node]
        return node


_DEFAULT = PersonalData()


def _differences(before: Any, after: Any, found: dict[str, str]) -> None:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key, value in before.items():
            _differences(value, after.get(key), found)
    elif isinstance(before, list | tuple) and isinstance(after, list | tuple):
        for old, new in zip(before, after, strict=False):
            _differences(old, new, found)
    elif before is not None and not isinstance(before, bool | Mapping | list | tuple) \
            and before != after:
        found[str(before)] = str(after)


def unecho(text: str, echoes: Mapping[str, str]) -> str:
    """``text`` with each key of ``echoes`` standing alone (not inside a longer word or
    number) replaced by its masked form."""
    if not echoes or not text:
        return text
    pattern = re.compile("|".join(rf"(?<![\w@.+-]){re.escape(v)}(?![\w@-])"
                                  for v in sorted(echoes, key=len, reverse=True)))
    return pattern.sub(lambda m: echoes[m.group(0)], text)


def unecho_data(value: Any, echoes: Mapping[str, str]) -> Any:
    """``unecho`` on every string of JSON-like ``value``."""
    if not echoes:
        return value
    return _every_leaf(value, lambda v: unecho(v, echoes) if isinstance(v, str) else v)


def _masked(node: Any, kind: str) -> Any:
    """Every leaf of ``node`` masked as ``kind`` (an address keeps its country and region)."""
    if isinstance(node, Mapping):
        return {k: (v if kind == "address" and isinstance(k, str)
                    and _KEPT_IN_ADDRESS.search(_normal(k)) else _masked(v, kind))
                for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_masked(v, kind) for v in node]
    return mask(node, "full" if kind == "address" else kind)
