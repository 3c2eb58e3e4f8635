"""The expression grammar (lark, LALR) and :func:`parse`, which turns text into :mod:`.nodes`.

Parsing is the first line of defence: the grammar has no attribute access on Python objects, no
method calls, no operators that can run long (no power), and :func:`parse` additionally refuses
dunder names, oversized text, deep nesting and huge number literals — all with an
:class:`ExpressionError` (a ``ConfigError``) that knows the character offset of the problem.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from integration_bus.errors import ConfigError
from integration_bus.mapping import nodes as n

__all__ = ["MAX_DEPTH", "MAX_EXPONENT", "MAX_LENGTH", "ExpressionError", "Parser", "parse"]

MAX_LENGTH = 4000
MAX_DEPTH = 40
MAX_EXPONENT = 100

GRAMMAR = r"""
?start: expr
?expr: "if" expr "then" expr "else" expr      -> cond
     | pipe
?pipe: disj
     | pipe "|" NAME                           -> pipe_bare
     | pipe "|" NAME "(" [args] ")"            -> pipe_call
?disj: conj | disj "or" conj                   -> or_
?conj: neg | conj "and" neg                    -> and_
?neg: "not" neg                                -> not_
    | comp
?comp: cat
     | cat COMP_OP cat                         -> compare
     | cat "in" cat                            -> in_
?cat: sum | cat "~" sum                        -> concat
?sum: prod | sum ADD_OP prod                   -> arith
?prod: unary | prod MUL_OP unary               -> arith
?unary: "-" unary                              -> negate
      | postfix
?postfix: primary
        | postfix "." NAME                     -> get_field
        | postfix "[" STRING "]"               -> get_key
        | postfix "[" SIGNED_INT "]"           -> get_index
        | postfix "[" "*" "]"                  -> get_all
?primary: NAME                                 -> name
        | VAR                                  -> var
        | NUMBER                               -> number
        | STRING                               -> string
        | "true"                               -> true
        | "false"                              -> false
        | "null"                               -> null
        | NAME "(" [args] ")"                  -> call
        | "[" [args] "]"                       -> list
        | "(" expr ")"
args: expr ("," expr)*

COMP_OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
ADD_OP: "+" | "-"
MUL_OP: "*" | "/" | "%"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
VAR: /\$[a-z_]*/
NUMBER: /[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/
SIGNED_INT: /-?[0-9]+/
STRING: /'(\\.|[^'\\\n])*'/ | /"(\\.|[^"\\\n])*"/
%ignore /[ \t\r\n]+/
"""

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "/": "/"}
_TOKEN_NAMES = {
    "NAME": "a name", "VAR": "a $variable", "NUMBER": "a number", "STRING": "a quoted text",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "COMMA": "','", "DOT": "'.'",
    "VBAR": "'|'", "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/' or '%'",
    "$END": "the end", "SIGNED_INT": "an integer", "TILDE": "'~'", "STAR": "'*'",
    "MINUS": "'-'", "TRUE": "true", "FALSE": "false", "NULL": "null", "IF": "if", "NOT": "not",
    "THEN": "then", "ELSE": "else", "AND": "and", "OR": "or", "IN": "in",
}


class ExpressionError(ConfigError):
    """An expression that cannot be loaded; ``offset`` is the character where the problem is."""

    def __init__(self, message: str, offset: int, **context: Any) -> None:
        super().__init__(message, **context)
        self.offset = offset


class Parser:
    """A reusable expression parser (building the LALR tables takes a few milliseconds)."""

    def __init__(self) -> None:
        self._lark = Lark(GRAMMAR, parser="lalr", propagate_positions=False,
                          maybe_placeholders=False)

    def parse(self, text: str) -> n.Node:
        """Parse ``text``; raises ExpressionError for syntax or safety problems."""
        if len(text) > MAX_LENGTH:
            raise ExpressionError(
                f"expression is {len(text)} characters; the limit is {MAX_LENGTH}", 0,
                hint="split it over several fields or steps")
        if not text.strip():
            raise ExpressionError("empty expression", 0,
                                  hint="write a field name, a literal like 'EUR', or null")
        _check_nesting(text)
        self._check_names(text)
        try:
            tree = self._lark.parse(text)
        except UnexpectedInput as exc:
            raise _syntax_error(text, exc) from exc
        except LarkError as exc:  # pragma: no cover - lark raises UnexpectedInput for bad input
            raise ExpressionError(f"cannot parse expression: {exc}", 0) from exc
        _check_depth(tree)
        return _build(tree)


    def _check_names(self, text: str) -> None:
        """Refuse dunder names before parsing, so ``().__class__`` gets the clear message."""
        try:
            for token in self._lark.lex(text, dont_ignore=False):
                if token.type == "NAME":
                    _check_name(token, "name")
        except LarkError:
            return  # the parser reports the syntax error with a better message


def parse(text: str) -> n.Node:
    """Parse with a fresh :class:`Parser` (convenience for tests and one-off use)."""
    return Parser().parse(text)


def _check_nesting(text: str) -> None:
    depth = 0
    for offset, char in enumerate(text):
        if char in "([":
            depth += 1
            if depth > MAX_DEPTH:
                raise ExpressionError(f"expression nested deeper than {MAX_DEPTH} levels", offset,
                                      hint="simplify it, or split it over several fields")
        elif char in ")]":
            depth -= 1


def _check_depth(tree: Tree[Token]) -> None:
    stack: list[tuple[Tree[Token], int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH * 2:
            raise ExpressionError(f"expression has more than {MAX_DEPTH * 2} levels of operators",
                                  _first_pos(node), hint="split it over several fields or steps")
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


def _first_pos(node: Tree[Token] | Token) -> int:
    while isinstance(node, Tree):
        if not node.children:
            return 0
        node = node.children[0]
    return int(node.start_pos or 0) if isinstance(node, Token) else 0


def _syntax_error(text: str, exc: UnexpectedInput) -> ExpressionError:
    offset = int(getattr(exc, "pos_in_stream", None) or 0)
    if isinstance(exc, UnexpectedEOF):
        return ExpressionError("expression ends too early", len(text),
                               hint="check for a missing operand, ')' or ']'")
    if isinstance(exc, UnexpectedCharacters):
        char = text[offset] if offset < len(text) else ""
        hint = "text literals are quoted: 'EUR'" if char in "`" else None
        if char == "=":
            hint = "compare with '==' (a single '=' is not an operator)"
        elif char in "&!":
            hint = "use 'and', 'or', 'not'"
        return ExpressionError(f"unexpected character {char!r}", offset, hint=hint)
    token = getattr(exc, "token", None)
    if isinstance(token, Token) and token.type == "$END":
        return ExpressionError("expression ends too early", len(text),
                               hint="check for a missing operand, ')' or ']'")
    expected = sorted({_TOKEN_NAMES.get(t, repr(t)) for t in getattr(exc, "expected", ()) or ()})
    shown = token.value if isinstance(token, Token) else str(token)
    offset = int(token.start_pos or 0) if isinstance(token, Token) else offset
    hint = None
    if shown == "(":
        hint = "there are no methods; apply functions with a pipe: value | upper"
    elif shown == "=":
        hint = "compare with '=='"
    elif expected:
        hint = "expected " + ", ".join(expected[:6])
    return ExpressionError(f"unexpected {shown!r}", offset, hint=hint)


def _token_pos(token: Token) -> int:
    return int(token.start_pos or 0)


def _check_name(token: Token, what: str) -> str:
    name = str(token)
    if name.startswith("__"):
        raise ExpressionError(f"{what} {name!r} is not allowed (names starting with '__' are "
                              "reserved)", _token_pos(token),
                              hint="expressions read JSON fields only; there is no Python access")
    return name


def _decimal(token: Token) -> Decimal:
    try:
        value = Decimal(str(token))
    except InvalidOperation as exc:  # pragma: no cover - the NUMBER regex admits valid text only
        raise ExpressionError(f"invalid number {token}", _token_pos(token)) from exc
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and (abs(exponent) > MAX_EXPONENT
                                      or value.adjusted() > MAX_EXPONENT):
        raise ExpressionError(f"number {token} is out of range (exponent limit {MAX_EXPONENT})",
                              _token_pos(token), hint="money and quantities never need this")
    return value


def _unquote(token: Token) -> str:
    raw = str(token)[1:-1]
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt not in _ESCAPES:
                raise ExpressionError(f"unknown escape '\\{nxt}' in text literal",
                                      _token_pos(token) + i + 1,
                                      hint="escapes: \\n \\t \\' \\\" \\\\")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _build(tree: Tree[Token] | Token) -> n.Node:
    if isinstance(tree, Token):  # pragma: no cover - every token is wrapped by a rule
        raise ExpressionError(f"unexpected token {tree!r}", _token_pos(tree))
    rule, kids = tree.data, tree.children
    pos = _first_pos(tree)
    if rule == "name":
        return n.Path(None, (n.Field(_check_name(kids[0], "field")),), pos)  # type: ignore[arg-type]
    if rule == "var":
        return n.Var(str(kids[0]), pos)
    if rule == "number":
        return n.Lit(_decimal(kids[0]), pos)  # type: ignore[arg-type]
    if rule == "string":
        return n.Lit(_unquote(kids[0]), pos)  # type: ignore[arg-type]
    if rule in ("true", "false", "null"):
        return n.Lit({"true": True, "false": False, "null": None}[rule], pos)
    if rule == "list":
        return n.ListLit(_args(kids), pos)
    if rule == "call":
        name = _check_name(kids[0], "function")  # type: ignore[arg-type]
        return n.Call(name, _args(kids[1:]), pos)
    if rule in ("pipe_bare", "pipe_call"):
        subject = _build(kids[0])
        name = _check_name(kids[1], "function")  # type: ignore[arg-type]
        return n.Call(name, (subject, *_args(kids[2:])), _token_pos(kids[1]), piped=True)  # type: ignore[arg-type]
    if rule in ("get_field", "get_key", "get_index", "get_all"):
        return _segment(rule, kids)
    if rule == "cond":
        return n.Cond(_build(kids[0]), _build(kids[1]), _build(kids[2]), pos)
    if rule == "or_" or rule == "and_":
        return n.Logic(rule[:-1], _build(kids[0]), _build(kids[1]), pos)
    if rule == "not_":
        return n.Unary("not", _build(kids[0]), pos)
    if rule == "negate":
        return n.Unary("-", _build(kids[0]), pos)
    if rule in ("compare", "arith"):
        return n.Binary(str(kids[1]), _build(kids[0]), _build(kids[2]), _token_pos(kids[1]))  # type: ignore[arg-type]
    if rule == "in_":
        return n.Binary("in", _build(kids[0]), _build(kids[1]), pos)
    if rule == "concat":
        return n.Binary("~", _build(kids[0]), _build(kids[1]), pos)
    raise ExpressionError(f"unsupported syntax {rule}", pos)  # pragma: no cover


def _args(kids: list[Any]) -> tuple[n.Node, ...]:
    for kid in kids:
        if isinstance(kid, Tree) and kid.data == "args":
            return tuple(_build(arg) for arg in kid.children)
    return ()


def _segment(rule: str, kids: list[Any]) -> n.Node:
    base = _build(kids[0])
    token: Token | None = kids[1] if len(kids) > 1 else None
    segment: n.Segment
    if rule == "get_field":
        assert token is not None
        segment = n.Field(_check_name(token, "field"))
    elif rule == "get_key":
        assert token is not None
        segment = n.Field(_check_name(Token("STRING", _unquote(token), token.start_pos), "field"))
    elif rule == "get_index":
        assert token is not None
        segment = n.Index(int(str(token)))
    else:
        segment = n.Wild()
    if isinstance(base, n.Lit | n.ListLit) and not isinstance(segment, n.Index | n.Wild):
        raise ExpressionError("field access on a literal", base.pos,
                              hint="there are no methods or attributes; apply functions with a "
                                   "pipe: 'abc' | upper")
    if isinstance(base, n.Path):
        return n.Path(base.base, (*base.segments, segment), base.pos)
    return n.Path(base, (segment,), base.pos)
