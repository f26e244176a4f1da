"""The SOQL subset the Salesforce simulator understands, parsed into a query it can run.

Enough for what the connector and common clients send (``shared/research`` §2.2)::

    SELECT Id, Email, SystemModstamp FROM Contact
    WHERE (SystemModstamp > 2024-05-01T00:00:00Z) OR (SystemModstamp = 2024-05-01T00:00:00Z
           AND Id > '003...') AND Mainstay_ID__c != null
    ORDER BY SystemModstamp ASC, Id ASC LIMIT 10000

plus ``SELECT COUNT() FROM …``, ``IN (…)``, ``NOT IN``, ``LIKE`` and ``NOT``. Datetime
literals are unquoted (``2024-05-01T00:00:00Z``, ``.000+0000`` forms too), strings are single
quoted, and ``=`` on strings ignores case, as in SOQL. Anything else is
:class:`SoqlError` ``MALFORMED_QUERY``; a field the object lacks is ``INVALID_FIELD``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^'\\]|\\.)*')
    | (?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
KEYWORDS = frozenset(
    {"select", "from", "where", "and", "or", "not", "in", "like", "order", "by", "asc", "desc"}
    | {"limit", "null", "true", "false", "count", "nulls", "first", "last"}
)

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]


class SoqlError(Exception):
    """A query Salesforce would refuse: ``code`` is its errorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Query:
    """A parsed SELECT: canonical field names, the object, a row filter, the order, a limit."""

    obj: str
    fields: list[str]
    count: bool = False
    where: Predicate = field(default=lambda row: True)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    limit: int | None = None

    def run(self, rows: list[Row]) -> list[Row]:
        """The matching rows, ordered and limited (nulls first when ascending, as SOQL)."""
        out = [r for r in rows if self.where(r)]
        for name, desc in reversed(self.order):
            # Nulls sort first ascending and last descending (SOQL's defaults).
            out.sort(key=lambda r, n=name: _sort_key(r.get(n)), reverse=desc)
        return out[: self.limit] if self.limit is not None else out


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, str):
        return (1, value.lower())
    return (1, value)


def parse_datetime(text: str) -> datetime:
    """A SOQL datetime literal (or Salesforce's ``.000+0000`` output form) as aware UTC."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token near {text[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, catalogue: Mapping[str, Mapping[str, Mapping[str, Any]]]):
        self.tokens = _tokenize(text)
        self.pos = 0
        self.catalogue = catalogue
        self.fields: Mapping[str, Mapping[str, Any]] = {}
        self.obj = ""

    # --- token helpers ------------------------------------------------------------------

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        kind, value = self.peek()
        if kind == "word" and value.lower() == word:
            self.pos += 1
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.keyword(word):
            found = self.peek()[1]
            raise SoqlError("MALFORMED_QUERY", f"expecting {word.upper()}, found {found!r}")

    def punct(self, char: str) -> bool:
        if self.peek() == ("punct", char):
            self.pos += 1
            return True
        return False

    def ident(self) -> str:
        kind, value = self.take()
        if kind != "word" or value.lower() in KEYWORDS:
            raise SoqlError("MALFORMED_QUERY", f"expecting a field name, found {value!r}")
        return value

    def field_name(self, raw: str) -> str:
        spec = self.fields.get(raw.lower())
        if spec is None:
            raise SoqlError(
                "INVALID_FIELD",
                f"No such column '{raw}' on entity '{self.obj}'. If you are attempting to use a "
                "custom field, be sure to append the '__c' after the custom field name.",
            )
        return str(spec["name"])

    # --- grammar ------------------------------------------------------------------------

    def query(self) -> Query:
        self.expect("select")
        raw_fields: list[str] = []
        count = False
        if self.peek()[1].lower() == "count" and self.tokens[self.pos + 1 : self.pos + 2] == [
            ("punct", "(")
        ]:
            self.pos += 1
            self.punct("(")
            if not self.punct(")"):
                raise SoqlError("MALFORMED_QUERY", "only COUNT() is supported")
            count = True
        else:
            raw_fields.append(self.ident())
            while self.punct(","):
                raw_fields.append(self.ident())
        self.expect("from")
        name = self.ident()
        by_lower = {k.lower(): k for k in self.catalogue}
        if name.lower() not in by_lower:
            raise SoqlError("INVALID_TYPE", f"sObject type '{name}' is not supported.")
        self.obj = by_lower[name.lower()]
        self.fields = {k.lower(): v for k, v in self.catalogue[self.obj].items()}
        query = Query(self.obj, [self.field_name(f) for f in raw_fields], count=count)
        if self.keyword("where"):
            query.where = self.disjunction()
        if self.keyword("order"):
            self.expect("by")
            while True:
                name = self.field_name(self.ident())
                desc = False
                if self.keyword("desc"):
                    desc = True
                else:
                    self.keyword("asc")
                if self.keyword("nulls") and not (self.keyword("first") or self.keyword("last")):
                    raise SoqlError("MALFORMED_QUERY", "expecting FIRST or LAST after NULLS")
                query.order.append((name, desc))
                if not self.punct(","):
                    break
        if self.keyword("limit"):
            kind, value = self.take()
            if kind != "num" or not value.isdigit():
                raise SoqlError("MALFORMED_QUERY", f"LIMIT needs a whole number, not {value!r}")
            query.limit = int(value)
        if self.peek()[0] != "end":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: {self.peek()[1]!r}")
        return query

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.keyword("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.factor()]
        while self.keyword("and"):
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def factor(self) -> Predicate:
        if self.keyword("not"):
            inner = self.factor()
            return lambda row: not inner(row)
        if self.punct("("):
            inner = self.disjunction()
            if not self.punct(")"):
                raise SoqlError("MALFORMED_QUERY", "unbalanced parenthesis")
            return inner
        name = self.field_name(self.ident())
        kind = str(self.fields[name.lower()]["type"])
        if self.keyword("not"):
            self.expect("in")
            values = self.value_list(name, kind)
            return lambda row: _norm(row.get(name)) not in values
        if self.keyword("in"):
            values = self.value_list(name, kind)
            return lambda row: _norm(row.get(name)) in values
        if self.keyword("like"):
            tkind, text = self.take()
            if tkind != "str":
                raise SoqlError("MALFORMED_QUERY", "LIKE needs a quoted string")
            pattern = re.compile(
                "^"
                + "".join(
                    ".*" if c == "%" else "." if c == "_" else re.escape(c) for c in _unquote(text)
                )
                + "$",
                re.IGNORECASE | re.DOTALL,
            )
            return lambda row: row.get(name) is not None and bool(pattern.match(str(row[name])))
        okind, op = self.take()
        if okind != "op":
            raise SoqlError("MALFORMED_QUERY", f"expecting an operator after {name}, found {op!r}")
        literal = self.literal(name, kind)
        return _compare(name, "!=" if op == "<>" else op, literal)

    def value_list(self, name: str, kind: str) -> set[Any]:
        if not self.punct("("):
            raise SoqlError("MALFORMED_QUERY", "IN needs a parenthesised list")
        values = {_norm(self.literal(name, kind))}
        while self.punct(","):
            values.add(_norm(self.literal(name, kind)))
        if not self.punct(")"):
            raise SoqlError("MALFORMED_QUERY", "unbalanced parenthesis in IN list")
        return values

    def literal(self, name: str, kind: str) -> Any:
        tkind, text = self.take()
        if tkind == "word" and text.lower() == "null":
            return None
        if kind == "datetime":
            if tkind != "dt":
                raise SoqlError(
                    "MALFORMED_QUERY",
                    f"value of filter criterion for field '{name}' must be of type dateTime "
                    "and should not be enclosed in quotes",
                )
            return parse_datetime(text)
        if kind == "date" and tkind == "date":
            return date.fromisoformat(text)
        if kind == "boolean":
            if tkind != "word" or text.lower() not in ("true", "false"):
                raise SoqlError("MALFORMED_QUERY", f"'{name}' takes true or false")
            return text.lower() == "true"
        if kind in ("double", "int", "currency", "percent"):
            if tkind != "num":
                raise SoqlError("MALFORMED_QUERY", f"'{name}' takes a number")
            return float(text)
        if tkind != "str":
            raise SoqlError(
                "MALFORMED_QUERY", f"value of filter criterion for field '{name}' must be quoted"
            )
        return _unquote(text)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _norm(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _compare(name: str, op: str, literal: Any) -> Predicate:
    want = _norm(literal)

    def check(row: Row) -> bool:
        have = _norm(row.get(name))
        if op == "=":
            return have == want
        if op == "!=":
            return have != want
        if have is None or want is None:
            return False
        if op == "<":
            return bool(have < want)
        if op == "<=":
            return bool(have <= want)
        if op == ">":
            return bool(have > want)
        return bool(have >= want)

    return check


def parse(text: str, catalogue: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Query:
    """Parse ``text`` against ``catalogue`` (object → lower-case-insensitive field specs with
    ``name`` and ``type``); :class:`SoqlError` when Salesforce would refuse it."""
    if not text or not text.strip():
        raise SoqlError("MALFORMED_QUERY", "an empty query")
    try:
        return _Parser(text, catalogue).query()
    except (ValueError, IndexError) as exc:
        raise SoqlError("MALFORMED_QUERY", str(exc)) from None
