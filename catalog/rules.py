"""Routing policy rules: the grammar, its validation and its evaluation.

Org admins write rules as JSON data (docs/routing-rules.md) that pick a route, a
deployment or a strategy from a request's metadata, key, org and prompt. This
module is pure: no Django, no I/O. Rules are validated and compiled once (regexes
included), then evaluated on every request against a `RequestFacts`.

Tenant regexes run on RE2 (`re2`), whose matching time is linear in the input:
one tenant's pattern cannot stall the process for everyone (docs/routing-rules.md,
"Regular expressions").
Python's backtracking `re` is deliberately not used anywhere in this module.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import re2

MAX_DEPTH = 10
MAX_NODES = 200
MAX_FIELD_LENGTH = 200
MAX_LIST_ITEMS = 1000
MAX_RULES = 1000
MAX_PATTERN_LENGTH = 1000
MAX_KEYWORDS = 200
MAX_KEYWORD_LENGTH = 100
MAX_NAME_LENGTH = 100
PROMPT_CAP = 100_000  # characters of request.prompt that conditions look at
STRATEGIES = ("cost", "latency", "capability", "weighted", "least_busy", "fallback")
ROOTS = ("metadata", "key", "org", "request")
# Fixed fields: "root.name" -> RequestFacts attribute.
_FIXED = {
    "key": {"id": "key_id", "name": "key_name", "prefix": "key_prefix"},
    "org": {"slug": "org_slug", "tier": "org_tier"},
    "request": {"model": "model", "prompt": "prompt", "max_tokens": "max_tokens"},
}
_MISSING = object()  # a field that is absent (distinct from a present null)
_COMPARISONS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
# RE2's \b only knows ASCII word characters ("café", "C++" would not end on a
# boundary), so keyword boundaries are spelled out with Unicode classes instead.
_NOT_WORD = r"[^\pL\pN\pM_]"


class RuleError(ValueError):
    """A rule or condition is invalid: `path` says where, `message` says what."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, kw_only=True)
class Action:
    """What matching rules decided. `route` and `deployment` never both set."""

    route: str | None = None
    deployment: str | None = None
    strategy: str | None = None


@dataclass(frozen=True, kw_only=True)
class RequestFacts:
    """What conditions can look at. `prompt` is every message content joined with
    newlines; `max_tokens` is None when the client sent none (the field is missing)."""

    metadata: dict
    key_id: str
    key_name: str
    key_prefix: str
    org_slug: str
    org_tier: str
    model: str
    prompt: str
    max_tokens: int | None


@dataclass(frozen=True)
class _Field:
    name: str  # as written, e.g. "metadata.tags"
    attr: str | None  # RequestFacts attribute for fixed fields
    keys: tuple[str, ...]  # metadata path otherwise

    def read(self, facts: Any) -> Any:
        if self.attr is None:
            value = getattr(facts, "metadata", None)
            for key in self.keys:
                if not isinstance(value, dict):
                    return _MISSING
                value = value.get(key, _MISSING)
            return value
        value = getattr(facts, self.attr, None)
        if self.attr == "prompt" and isinstance(value, str):
            return value[:PROMPT_CAP]
        return _MISSING if value is None else value


class _View:
    """One evaluation's facts, reading and UTF-8-encoding each field at most once
    (a large prompt tested by several regexes is sliced and encoded once)."""

    __slots__ = ("facts", "values", "encoded")

    def __init__(self, facts: Any) -> None:
        self.facts, self.values, self.encoded = facts, {}, {}

    def value(self, field: _Field) -> Any:
        if field.name not in self.values:
            self.values[field.name] = field.read(self.facts)
        return self.values[field.name]

    def utf8(self, field: _Field) -> bytes | None:
        if field.name not in self.encoded:
            value = self.value(field)
            # surrogatepass: a lone surrogate in odd input must not raise.
            self.encoded[field.name] = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else None
        return self.encoded[field.name]


_Test = Callable[[_View], bool]


def _tag(value: Any) -> tuple | None:
    """A JSON-typed key for equality: true is not 1 (as it is in Python), 1 is 1.0."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    return None  # lists, objects, missing: equal to no scalar


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # NaN/Infinity are not JSON numbers
    return value is None or isinstance(value, (bool, int, str))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and _is_scalar(value)


def _is_unicode(text: str) -> bool:
    """False for a lone surrogate (json.loads accepts "\\ud800"; UTF-8 cannot encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _re2_options(*, ignore_case: bool) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False  # a tenant's bad pattern is a validation error, not log noise
    return options


class Condition:
    """A validated, compiled condition; `test` never raises on odd request data."""

    __slots__ = ("_test",)

    def __init__(self, test: _Test) -> None:
        self._test = test

    def test(self, facts: RequestFacts) -> bool:
        """Whether the condition holds for these facts."""
        return self._test(_View(facts))


@dataclass(frozen=True)
class _Rule:
    name: str
    test: _Test
    action: Action
    stop: bool


class CompiledRules:
    """An ordered, validated rule set, ready to evaluate on every request."""

    def __init__(self, rules: tuple[_Rule, ...]) -> None:
        self._rules = rules

    def __len__(self) -> int:
        return len(self._rules)

    def evaluate(self, facts: RequestFacts) -> tuple[Action | None, list[str]]:
        """The merged action (None if no rule matched) and the matched rule names.

        Rules run in order; a match with stop (the default) ends evaluation. Later
        matches override earlier keys, and route/deployment are one slot: setting
        either replaces both."""
        view, merged, names = _View(facts), {}, []
        for rule in self._rules:
            if not rule.test(view):
                continue
            names.append(rule.name)
            fields = {k: v for k, v in vars(rule.action).items() if v is not None}
            if "route" in fields or "deployment" in fields:
                merged.pop("route", None), merged.pop("deployment", None)
            merged.update(fields)
            if rule.stop:
                break
        return (Action(**merged) if names else None), names


class _Compiler:
    """Validates while compiling and collects every problem, so admin forms can
    show them all; the compile_* functions raise the first."""

    def __init__(self) -> None:
        self.errors: list[RuleError] = []
        self.nodes = 0

    def fail(self, path: str, message: str) -> None:
        self.errors.append(RuleError(path, message))

    def when(self, raw: Any, path: str) -> _Test | None:
        self.nodes = 0  # the node limit is per condition tree
        return self.condition(raw, path, 1)

    def condition(self, raw: Any, path: str, depth: int) -> _Test | None:
        if depth > MAX_DEPTH:
            return self.fail(path, f"conditions are nested more than {MAX_DEPTH} levels deep")
        self.nodes += 1
        if self.nodes > MAX_NODES:  # reported once, then the rest is skipped unread
            return self.fail(path, f"condition has more than {MAX_NODES} nodes") if self.nodes == MAX_NODES + 1 else None
        if raw is True:
            if depth == 1:
                return lambda view: True
            return self.fail(path, "true is only allowed as a whole condition (a catch-all), not inside one")
        if not isinstance(raw, dict) or len(raw) != 1:
            return self.fail(path, "a condition must be true or an object with exactly one operator key, "
                             f"got {_describe(raw)}")
        [(op, arg)] = raw.items()
        if op in ("all", "any"):
            return self.all_any(op, arg, f"{path}.{op}", depth)
        if op == "not":
            inner = self.condition(arg, f"{path}.not", depth + 1)
            return None if inner is None else (lambda view: not inner(view))
        if op == "exists":
            field = self.field(arg, f"{path}.exists")
            return None if field is None else (lambda view: view.value(field) is not _MISSING)
        if op in _OPERATORS:
            return _OPERATORS[op](self, op, arg, f"{path}.{op}")
        allowed = ", ".join(["all", "any", "not", "exists", *_OPERATORS])
        return self.fail(path, f"unknown operator {str(op)[:50]!r}; allowed: {allowed}")

    def all_any(self, op: str, arg: Any, path: str, depth: int) -> _Test | None:
        if not isinstance(arg, list) or not arg:
            return self.fail(path, f"'{op}' needs a non-empty list of conditions")
        parts = []
        for i, item in enumerate(arg):
            if self.nodes >= MAX_NODES + 1:
                return None
            parts.append(self.condition(item, f"{path}[{i}]", depth + 1))
        if None in parts:
            return None
        combine = all if op == "all" else any
        return lambda view: combine(part(view) for part in parts)

    def args(self, op: str, arg: Any, path: str, shape: str, sizes: tuple[int, ...] = (2,)) -> list | None:
        if not isinstance(arg, list) or len(arg) not in sizes:
            return self.fail(path, f"'{op}' takes {shape}")
        return arg

    def field(self, raw: Any, path: str) -> _Field | None:
        if not isinstance(raw, str):
            return self.fail(path, f'field must be a string such as "metadata.user_id", got {_describe(raw)}')
        if len(raw) > MAX_FIELD_LENGTH:
            return self.fail(path, f"field is longer than {MAX_FIELD_LENGTH} characters")
        root, _, rest = raw.partition(".")
        if root not in ROOTS:
            return self.fail(path, f"unknown field root {root!r}; allowed roots: {', '.join(ROOTS)}")
        if root == "metadata":
            keys = tuple(rest.split("."))
            if not rest or "" in keys:
                return self.fail(path, f"field {raw!r} needs metadata keys separated by single dots, "
                                 "such as metadata.user_id")
            return _Field(raw, None, keys)
        if rest not in _FIXED[root]:
            allowed = ", ".join(f"{root}.{name}" for name in _FIXED[root])
            return self.fail(path, f"unknown field {raw!r}; allowed: {allowed}")
        return _Field(raw, _FIXED[root][rest], ())

    def scalar(self, value: Any, path: str) -> bool:
        if _is_scalar(value):
            return True
        self.fail(path, f"value must be a string, number, boolean or null, got {_describe(value)}")
        return False

    def equality(self, op: str, arg: Any, path: str) -> _Test | None:
        if self.args(op, arg, path, "[field, value]") is None:
            return None
        field, ok = self.field(arg[0], f"{path}[0]"), self.scalar(arg[1], f"{path}[1]")
        if field is None or not ok:
            return None
        want = _tag(arg[1])
        if op == "eq":
            return lambda view: _tag(view.value(field)) == want
        return lambda view: _tag(view.value(field)) != want  # ne is exactly "not eq"

    def membership(self, op: str, arg: Any, path: str) -> _Test | None:
        if self.args(op, arg, path, "[field, [value, ...]]") is None:
            return None
        field, values = self.field(arg[0], f"{path}[0]"), arg[1]
        if not isinstance(values, list) or not values:
            return self.fail(f"{path}[1]", "'in' needs a non-empty list of values")
        if len(values) > MAX_LIST_ITEMS:
            return self.fail(f"{path}[1]", f"list has more than {MAX_LIST_ITEMS} items")
        oks = [self.scalar(v, f"{path}[1][{i}]") for i, v in enumerate(values)]
        if field is None or not all(oks):
            return None
        wants = frozenset(_tag(v) for v in values)
        return lambda view: _tag(view.value(field)) in wants

    def contains(self, op: str, arg: Any, path: str) -> _Test | None:
        if self.args(op, arg, path, "[field, value]") is None:
            return None
        field, ok = self.field(arg[0], f"{path}[0]"), self.scalar(arg[1], f"{path}[1]")
        if field is None or not ok:
            return None
        want, tagged = arg[1], _tag(arg[1])

        def test(view: _View) -> bool:
            value = view.value(field)
            if isinstance(value, str):
                return isinstance(want, str) and want in value
            return isinstance(value, list) and any(_tag(item) == tagged for item in value)

        return test

    def comparison(self, op: str, arg: Any, path: str) -> _Test | None:
        if self.args(op, arg, path, "[field, number]") is None:
            return None
        field, bound = self.field(arg[0], f"{path}[0]"), arg[1]
        if not _is_number(bound):
            return self.fail(f"{path}[1]", f"'{op}' compares with a number, got {_describe(bound)}")
        if field is None:
            return None
        compare = _COMPARISONS[op]
        return lambda view: _is_number(value := view.value(field)) and compare(value, bound)

    def regex(self, op: str, arg: Any, path: str) -> _Test | None:
        shape = '[field, pattern] or [field, pattern, {"ignore_case": true}]'
        if self.args(op, arg, path, shape, (2, 3)) is None:
            return None
        field, pattern = self.field(arg[0], f"{path}[0]"), arg[1]
        ignore_case = self.flags(arg[2], f"{path}[2]") if len(arg) == 3 else False
        if not isinstance(pattern, str):
            return self.fail(f"{path}[1]", f"pattern must be a string, got {_describe(pattern)}")
        if len(pattern) > MAX_PATTERN_LENGTH:
            return self.fail(f"{path}[1]", f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
        compiled = self.compile_re2(pattern, f"{path}[1]", "pattern", ignore_case=bool(ignore_case))
        if field is None or compiled is None or ignore_case is None:
            return None
        return _searcher(field, compiled)

    def flags(self, raw: Any, path: str) -> bool | None:
        if not isinstance(raw, dict):
            return self.fail(path, f'flags must be an object such as {{"ignore_case": true}}, got {_describe(raw)}')
        for key in raw:
            if key != "ignore_case":
                return self.fail(path, f"unknown flag {str(key)[:50]!r}; allowed: ignore_case")
        if not isinstance(raw.get("ignore_case", False), bool):
            return self.fail(path, "ignore_case must be true or false")
        return raw.get("ignore_case", False)

    def compile_re2(self, pattern: str, path: str, what: str, *, ignore_case: bool) -> Any:
        if not _is_unicode(pattern):
            return self.fail(path, f"{what} is not valid Unicode text")
        try:
            return re2.compile(pattern, _re2_options(ignore_case=ignore_case))
        except re2.error as exc:
            reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            return self.fail(path, f"{what} is not valid RE2 syntax: {reason}")

    def keywords(self, op: str, arg: Any, path: str) -> _Test | None:
        if self.args(op, arg, path, '[field, ["word", ...]]') is None:
            return None
        field, words = self.field(arg[0], f"{path}[0]"), arg[1]
        if not isinstance(words, list) or not words:
            return self.fail(f"{path}[1]", "'keywords' needs a non-empty list of keywords")
        if len(words) > MAX_KEYWORDS:
            return self.fail(f"{path}[1]", f"more than {MAX_KEYWORDS} keywords")
        parts = []
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word.strip() or len(word) > MAX_KEYWORD_LENGTH:
                self.fail(f"{path}[1][{i}]", f"a keyword must be a non-blank string of at most "
                          f"{MAX_KEYWORD_LENGTH} characters, got {_describe(word)}")
            elif not _is_unicode(word):
                self.fail(f"{path}[1][{i}]", "keyword is not valid Unicode text")
            else:  # inner spaces match any run of whitespace (prompts wrap lines)
                parts.append(r"\s+".join(re2.escape(piece) for piece in word.split()))
        if len(parts) < len(words):
            return None
        # One alternation, one linear scan, however many keywords.
        pattern = f"(?:^|{_NOT_WORD})(?:{'|'.join(parts)})(?:{_NOT_WORD}|$)"
        compiled = self.compile_re2(pattern, f"{path}[1]", "keyword list", ignore_case=True)
        if field is None or compiled is None:
            return None
        return _searcher(field, compiled)

    def rule(self, raw: Any, path: str, seen: dict[str, str]) -> _Rule | None:
        if not isinstance(raw, dict):
            return self.fail(path, f"a rule must be an object with name, when and then, got {_describe(raw)}")
        for key in raw:
            if key not in ("name", "when", "then", "stop"):
                self.fail(path, f"unknown key {str(key)[:50]!r}; allowed: name, when, then, stop")
        for key in ("name", "when", "then"):
            if key not in raw:
                self.fail(path, f"missing {key!r}")
        name, stop = raw.get("name"), raw.get("stop", True)
        if "name" in raw and (not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH):
            self.fail(f"{path}.name", f"name must be a string of 1-{MAX_NAME_LENGTH} characters")
            name = None
        elif name in seen:
            self.fail(f"{path}.name", f"duplicate rule name {name!r} (also {seen[name]})")
        elif name is not None:
            seen[name] = path
        if not isinstance(stop, bool):
            self.fail(f"{path}.stop", "stop must be true or false")
        test = self.when(raw["when"], f"{path}.when") if "when" in raw else None
        action = self.action(raw["then"], f"{path}.then") if "then" in raw else None
        if name is None or test is None or action is None or not isinstance(stop, bool):
            return None
        return _Rule(name, test, action, stop)

    def action(self, raw: Any, path: str) -> Action | None:
        if not isinstance(raw, dict):
            return self.fail(path, f"an action must be an object with route, deployment or strategy, "
                             f"got {_describe(raw)}")
        known, errors_before = ("route", "deployment", "strategy"), len(self.errors)
        for key in raw:
            if key not in known:
                self.fail(path, f"unknown key {str(key)[:50]!r}; allowed: {', '.join(known)}")
        if not any(key in raw for key in known):
            self.fail(path, "an action needs at least one of route, deployment, strategy")
        if "route" in raw and "deployment" in raw:
            self.fail(path, "route and deployment are mutually exclusive")
        for key in ("route", "deployment"):
            if key in raw and not (isinstance(raw[key], str) and 1 <= len(raw[key]) <= MAX_NAME_LENGTH):
                self.fail(f"{path}.{key}", f"{key} must be a string of 1-{MAX_NAME_LENGTH} characters")
        if "strategy" in raw and raw["strategy"] not in STRATEGIES:
            self.fail(f"{path}.strategy", f"strategy must be one of {', '.join(STRATEGIES)}")
        if len(self.errors) > errors_before:
            return None
        return Action(**{key: raw[key] for key in known if key in raw})


def _searcher(field: _Field, compiled: Any) -> _Test:
    # Searching the UTF-8 bytes skips the re2 wrapper's per-call encoding and
    # offset decoding; only "is there a match" matters here.
    return lambda view: (text := view.utf8(field)) is not None and compiled.search(text) is not None


_OPERATORS = {
    "eq": _Compiler.equality, "ne": _Compiler.equality, "in": _Compiler.membership,
    "contains": _Compiler.contains, **dict.fromkeys(_COMPARISONS, _Compiler.comparison),
    "regex": _Compiler.regex, "keywords": _Compiler.keywords,
}


def _describe(value: Any) -> str:
    """A short JSON-ish description of a bad value for error messages."""
    if isinstance(value, dict):
        return ("an object with keys " + ", ".join(repr(str(k)[:50]) for k in list(value)[:5])) if value else "{}"
    if isinstance(value, list):
        return "a list"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        return repr(value[:50]) + ("..." if len(value) > 50 else "")
    return repr(value)[:50]


def compile_condition(raw: Any, *, path: str = "condition") -> Condition:
    """Validate and compile one condition; raise RuleError at the first problem."""
    compiler = _Compiler()
    test = compiler.when(raw, path)
    if compiler.errors:
        raise compiler.errors[0]
    return Condition(test)


def _compile(raw: Any) -> tuple[CompiledRules | None, list[RuleError]]:
    compiler = _Compiler()
    if not isinstance(raw, list):
        compiler.fail("rules", f"rules must be a list of rule objects, got {_describe(raw)}")
    elif len(raw) > MAX_RULES:
        compiler.fail("rules", f"more than {MAX_RULES} rules")
    else:
        seen: dict[str, str] = {}
        rules = [compiler.rule(item, f"rules[{i}]", seen) for i, item in enumerate(raw)]
        if not compiler.errors:
            return CompiledRules(tuple(rules)), []
    return None, compiler.errors


def compile_rules(raw: Any) -> CompiledRules:
    """Validate and compile a rule set (a list of rules); raise RuleError with the
    path of the first problem."""
    compiled, errors = _compile(raw)
    if errors:
        raise errors[0]
    return compiled


def validate_rules(raw: Any) -> list[str]:
    """Every problem in a rule set as "path: message" (for admin forms); [] if valid."""
    return [str(error) for error in _compile(raw)[1]]
