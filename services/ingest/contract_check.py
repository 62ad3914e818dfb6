"""What a contract may ask for: checked at submission, so a job the engines cannot hold to its
shape is refused before anything of it is written.

A JSON schema must be valid (Draft 2020-12, checked by the `jsonschema` library), at most
MAX_SCHEMA_BYTES encoded, at most MAX_DEPTH levels deep, and use only the keywords below: the ones
xgrammar (the grammar backend of the vllm and transformers engines) turns into a grammar; its
references must resolve within it, and its bounds must leave some value (xgrammar builds no
grammar for `minimum` 5 with `maximum` 1, nor, in the strict mode the engines use, for a
`minItems` beyond the items listed when `items` is not given). A regex (a `regex` contract or a
schema's `pattern`) may use only what xgrammar's regex converter takes. The worker validates
every result against the whole schema anyway, so a keyword the grammar enforces only loosely (a
string's `maxLength`) still cannot let an invalid result through as succeeded."""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import msgspec

from shared.wire.contract import Contract

MAX_SCHEMA_BYTES = 16_384
MAX_DEPTH = 16
MAX_JSON_DEPTH = 4 * MAX_DEPTH  # objects and arrays in the schema's JSON, whatever they hold
MAX_CHOICES_BYTES = 16_384

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated"}
# keyword -> how its value holds subschemas: "one" (a schema), "map" (name -> schema), "list"
SUBSCHEMAS = {
    "properties": "map",
    "$defs": "map",
    "definitions": "map",
    "items": "one",
    "additionalProperties": "one",
    "prefixItems": "list",
    "anyOf": "list",
}
PLAIN = {
    "type",
    "enum",
    "const",
    "required",
    "$ref",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minProperties",
    "maxProperties",
}
ALLOWED = ANNOTATIONS | set(SUBSCHEMAS) | PLAIN
FORMATS = {
    "email",
    "date",
    "time",
    "date-time",
    "duration",
    "ipv4",
    "ipv6",
    "hostname",
    "uuid",
    "uri",
    "uri-reference",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
}
# a repetition count a grammar can express: {m}, {m,} or {m,n}
_COUNT = re.compile(r"\{\d+(?:,\d*)?\}")
_REF = re.compile(r"#(?:/(?:\$defs|definitions)/[^/~%]+)?")
INT64 = 2**63


def _json_depth(value: Any) -> int:
    """How deep JSON objects and arrays nest in `value`, measured without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        node, depth = todo.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:
            todo.extend((child, depth + 1) for child in children)
    return deepest


class ContractRefused(Exception):
    """A response_format the service will not accept; `path` is where in it
    (e.g. `json_schema.schema.properties.tags`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def check(contract: Contract) -> None:
    """Raise ContractRefused naming the place in the response_format that cannot be served."""
    if contract.kind == "json_schema":
        _check_schema(contract.schema or {})
    elif contract.kind == "regex":
        _check_regex(contract.pattern or "")
    elif contract.kind == "choice":
        _check_choices(contract.choices or [])


def _check_schema(schema: dict[str, Any]) -> None:
    if _json_depth(schema) > MAX_JSON_DEPTH:  # before anything recurses into it
        raise ContractRefused("json_schema.schema", f"the schema nests deeper than {MAX_JSON_DEPTH} JSON levels")
    size = len(msgspec.json.encode(schema))
    if size > MAX_SCHEMA_BYTES:
        raise ContractRefused(
            "json_schema.schema", f"the schema is {size} bytes encoded, more than the limit of {MAX_SCHEMA_BYTES}"
        )
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except (OverflowError, RecursionError) as exc:  # its format check of a pattern, e.g. a{99999999999999999999}
        raise ContractRefused("json_schema.schema", f"not a valid JSON Schema: {type(exc).__name__}: {exc}") from None
    except SchemaError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise ContractRefused(
            "json_schema.schema" + (f".{where}" if where else ""), f"not a valid JSON Schema: {exc.message}"
        ) from None
    _walk(schema, "json_schema.schema", 0, schema)


def _walk(node: Any, path: str, depth: int, root: dict[str, Any]) -> None:
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise ContractRefused(path, "a schema must be an object or a boolean")
    if depth > MAX_DEPTH:
        raise ContractRefused(path, f"the schema nests deeper than {MAX_DEPTH} levels")
    if depth > 0 and ("$id" in node or "$schema" in node):
        key = "$id" if "$id" in node else "$schema"
        raise ContractRefused(
            f"{path}.{key}", f"{key} is allowed at the schema's root only (it changes what refs mean)"
        )
    for key, value in node.items():
        if key not in ALLOWED:
            raise ContractRefused(
                f"{path}.{key}",
                f"keyword {key!r} cannot be enforced while decoding; supported: {', '.join(sorted(ALLOWED))}",
            )
        kind = SUBSCHEMAS.get(key)
        if kind == "one":
            _walk(value, f"{path}.{key}", depth + 1, root)
        elif kind == "map":
            for name, sub in value.items():
                _walk(sub, f"{path}.{key}.{name}", depth + 1, root)
        elif kind == "list":
            for i, sub in enumerate(value):
                _walk(sub, f"{path}.{key}[{i}]", depth + 1, root)
    _check_combinations(node, path, root)


def _check_combinations(node: dict[str, Any], path: str, root: dict[str, Any]) -> None:
    fmt = node.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ContractRefused(
            f"{path}.format", f"format {fmt!r} cannot be enforced; supported: {', '.join(sorted(FORMATS))}"
        )
    if ("pattern" in node or "format" in node) and ("minLength" in node or "maxLength" in node):
        raise ContractRefused(
            f"{path}.{'pattern' if 'pattern' in node else 'format'}",
            "a string with a pattern or format cannot also bound its length (minLength/maxLength)",
        )
    ref = node.get("$ref")
    if ref is not None and not _REF.fullmatch(ref):
        raise ContractRefused(
            f"{path}.$ref",
            f"only `#` and `#/$defs/<name>` (or `#/definitions/<name>`) references are supported, not {ref!r}",
        )
    if ref is not None and not _resolves(root, ref):
        raise ContractRefused(f"{path}.$ref", f"{ref!r} refers to nothing in the schema")
    _check_names(node, path)
    _check_bounds(node, path)
    if "pattern" in node:
        _check_regex(node["pattern"], f"{path}.pattern")


def _resolves(root: dict[str, Any], ref: str) -> bool:
    """Whether a reference of the supported forms names a schema of `root`: a dangling one passes
    the metaschema but no validator (nor grammar) can follow it."""
    if ref == "#":
        return True
    _, holder, name = ref.split("/", 2)
    defs = root.get(holder)
    return isinstance(defs, dict) and isinstance(defs.get(name), (dict, bool))


def _check_names(node: dict[str, Any], path: str) -> None:
    """`required` names a grammar can write: in the strict mode the engines compile, an object
    holds only the properties it lists unless `additionalProperties` is a schema (or true)."""
    extra = node.get("additionalProperties", False)
    if extra is not False or "anyOf" in node or "$ref" in node:  # the names may be listed there
        return
    listed = node.get("properties", {})
    for name in node.get("required", ()):
        if name not in listed:
            raise ContractRefused(
                f"{path}.required",
                f"{name!r} is required but not among the properties (nor allowed by additionalProperties),"
                " so no object can have it",
            )


_RANGES = (("minItems", "maxItems"), ("minLength", "maxLength"), ("minProperties", "maxProperties"))


def _check_bounds(node: dict[str, Any], path: str) -> None:
    """Bounds that leave no value: the metaschema allows them, no grammar can be built for them."""
    if node.get("enum") == []:
        raise ContractRefused(f"{path}.enum", "an empty enum allows no value")
    for low, high in _RANGES:
        if low in node and high in node and node[low] > node[high]:
            raise ContractRefused(f"{path}.{low}", f"{low} {node[low]} is more than {high} {node[high]}")
    # the engines build grammars in xgrammar's strict mode: no `items` (additionalProperties)
    # allows no items (properties) beyond those the schema lists
    types = node.get("type")
    types = types if isinstance(types, list) else [types]
    listed = (
        ("array", "minItems", "items", "prefixItems", "items beyond its prefixItems"),
        ("object", "minProperties", "additionalProperties", "properties", "properties beyond its properties"),
    )
    for kind, low, more, given, what in listed:
        if kind in types and node.get(more, False) is False and node.get(low, 0) > len(node.get(given, ())):
            raise ContractRefused(
                f"{path}.{low}",
                f"{low} {node[low]} needs {what}: give `{more}` a schema (without it none are allowed)",
            )
    if "integer" in types and "number" not in types:
        for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            value = node.get(bound)
            least, most = (-INT64 - 1, INT64) if bound.startswith("exclusive") else (-INT64, INT64 - 1)
            if value is not None and (not least <= value <= most or not float(value).is_integer()):
                raise ContractRefused(
                    f"{path}.{bound}",
                    f"an integer's {bound} must be a whole number within 64 bits, not {str(value)[:40]}",
                )
    for low in ("minimum", "exclusiveMinimum"):
        for high in ("maximum", "exclusiveMaximum"):
            if low in node and high in node and _empty(node, low, high):
                raise ContractRefused(f"{path}.{low}", f"{low} {node[low]} and {high} {node[high]} leave no value")


def _empty(node: dict[str, Any], low: str, high: str) -> bool:
    a, b = node[low], node[high]
    open_low, open_high = low.startswith("exclusive"), high.startswith("exclusive")
    types = node.get("type")
    if types == "integer" or (isinstance(types, list) and "integer" in types and "number" not in types):
        least = math.floor(a) + 1 if open_low else math.ceil(a)
        most = math.ceil(b) - 1 if open_high else math.floor(b)
        return least > most
    return a > b or (a == b and (open_low or open_high))


def _check_regex(pattern: str, path: str = "pattern") -> None:
    if "\x00" in pattern:
        raise ContractRefused(path, "a NUL character cannot be enforced while decoding")
    try:
        with warnings.catch_warnings():  # `[[` warns of a future nested set; refused below anyway
            warnings.simplefilter("ignore", FutureWarning)
            re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ContractRefused(path, f"not a valid regular expression: {exc or type(exc).__name__}") from None
    found = _unsupported_regex(pattern)
    if found:
        raise ContractRefused(path, f"{found} cannot be enforced while decoding")


def _unsupported_regex(pattern: str) -> str | None:
    """The first construct of a (valid) pattern that a grammar cannot express, described; None
    when there is none. Escapes and character classes are stepped over whole, so `\\(?`, `[\\b]`
    and `\\\\1` are plain characters."""
    i, n = 0, len(pattern)
    repeated = False  # the token before is a quantifier
    while i < n:
        c = pattern[i]
        if c == "\\":
            escaped = pattern[i : i + 2]
            if escaped[1:] in tuple("123456789"):
                return f"{escaped!r}: backreferences"
            if escaped[1:] in ("b", "B"):
                return f"{escaped!r}: word boundaries"
            if escaped[1:] in ("A", "Z", "z", "G"):
                return f"{escaped!r}: anchors (the whole output matches; `^` and `$` may open and close it)"
            i, repeated = i + 2, False
        elif c == "[":
            first = i + 2 if pattern.startswith("[^", i) else i + 1
            if pattern[first : first + 1] == "]":  # a `]` here is a member to Python, the class's end to a grammar
                return f"{pattern[i : first + 1]!r}: a class that opens with `]` (write \\])"
            end = _class_end(pattern, first)
            nested = next((m for m in ("[:", "[=", "[.") if m in pattern[first:end]), None)
            if nested:  # a POSIX class to some regex engines, plain characters to others
                return f"{nested!r} inside a class: POSIX classes (write \\[ for a bracket)"
            i, repeated = end, False
        elif c == "(" and pattern.startswith("(?", i) and not pattern.startswith("(?:", i):
            return (
                f"{pattern[i : i + 3]!r}: lookarounds, named groups, inline flags, atomic groups, comments and"
                " conditionals (only `(?:...)` groups)"
            )
        elif c == "{":
            count = _COUNT.match(pattern, i)
            if count is None:
                return f"{pattern[i : i + 6]!r}: a brace that is not a repetition {{m}}, {{m,}} or {{m,n}} (write \\{{)"
            if pattern[count.end() : count.end() + 1] == "+":
                return f"{count.group(0) + '+'!r}: possessive repetitions"
            i, repeated = count.end(), True
        elif (c == "^" and i > 0) or (c == "$" and i < n - 1):
            return f"{c!r} inside the pattern: anchors only open and close it"
        elif c in "*+?" and repeated:
            if c == "+":
                return f"{pattern[i - 1 : i + 1]!r}: possessive repetitions"
            i, repeated = i + 1, False  # lazy
        else:
            i, repeated = i + 1, c in "*+?"
    return None


def _class_end(pattern: str, j: int) -> int:
    """The index just past the `]` that closes a character class whose members start at `j`."""
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
        elif pattern[j] == "]":
            return j + 1
        else:
            j += 1
    return j


def _check_choices(choices: list[str]) -> None:
    seen: set[str] = set()
    for i, choice in enumerate(choices):
        if choice in seen:
            raise ContractRefused(f"choices[{i}]", f"duplicate choice {choice!r}")
        seen.add(choice)
    size = sum(len(c.encode()) for c in choices)
    if size > MAX_CHOICES_BYTES:
        raise ContractRefused("choices", f"the choices are {size} bytes, more than the limit of {MAX_CHOICES_BYTES}")
