"""Routing policy rules (catalog/rules.py): grammar, validation messages, evaluation."""
from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path

import pytest

import catalog.rules
from catalog.rules import (
    Action,
    CompiledRules,
    RequestFacts,
    RuleError,
    compile_condition,
    compile_rules,
    validate_rules,
)


def facts(**overrides) -> RequestFacts:
    values = dict(
        metadata={
            "user_id": "u-42",
            "priority": "high",
            "tags": ["beta", "legal"],
            "score": 7,
            "ratio": 0.5,
            "vip": True,
            "note": None,
            "team": {"region": {"name": "eu"}},
        },
        key_id="k_abc",
        key_name="backend",
        key_prefix="ocw_abc",
        org_slug="acme",
        org_tier="enterprise",
        model="best_general",
        prompt="Hello\nI need Legal advice about a contract.",
        max_tokens=512,
    )
    values.update(overrides)
    return RequestFacts(**values)


def holds(condition, **overrides) -> bool:
    return compile_condition(condition).test(facts(**overrides))


def error_of(condition) -> RuleError:
    with pytest.raises(RuleError) as caught:
        compile_condition(condition)
    return caught.value


def rule(name="r", when=True, then=None, **extra):
    return {"name": name, "when": when, "then": then or {"route": "general"}, **extra}


# --- operators, true and false ---------------------------------------------------------

@pytest.mark.parametrize("condition, expected", [
    ({"eq": ["metadata.user_id", "u-42"]}, True),
    ({"eq": ["metadata.user_id", "u-43"]}, False),
    ({"eq": ["metadata.score", 7.0]}, True),  # JSON numbers: 7 == 7.0
    ({"eq": ["metadata.vip", True]}, True),
    ({"eq": ["metadata.vip", 1]}, False),  # true is not 1, unlike Python
    ({"eq": ["metadata.score", "7"]}, False),  # no string/number coercion
    ({"eq": ["metadata.note", None]}, True),
    ({"eq": ["metadata.absent", None]}, False),  # missing is not null
    ({"ne": ["org.tier", "free"]}, True),
    ({"ne": ["org.tier", "enterprise"]}, False),
    ({"ne": ["metadata.absent", "x"]}, True),  # ne is exactly "not eq"
    ({"in": ["org.tier", ["pro", "enterprise"]]}, True),
    ({"in": ["org.tier", ["free", "pro"]]}, False),
    ({"in": ["metadata.score", [1, 7]]}, True),
    ({"in": ["metadata.vip", [1]]}, False),
    ({"in": ["metadata.tags", ["beta"]]}, False),  # a list is not a member of a list of scalars
    ({"contains": ["metadata.tags", "legal"]}, True),
    ({"contains": ["metadata.tags", "alpha"]}, False),
    ({"contains": ["request.prompt", "Legal advice"]}, True),
    ({"contains": ["request.prompt", "legal advice"]}, False),  # substring is case-sensitive
    ({"contains": ["metadata.user_id", 42]}, False),
    ({"gt": ["metadata.score", 6]}, True),
    ({"gt": ["metadata.score", 7]}, False),
    ({"gte": ["metadata.score", 7]}, True),
    ({"gte": ["metadata.ratio", 0.6]}, False),
    ({"lt": ["request.max_tokens", 1000]}, True),
    ({"lt": ["request.max_tokens", 512]}, False),
    ({"lte": ["request.max_tokens", 512]}, True),
    ({"lte": ["metadata.ratio", 0.25]}, False),
    ({"regex": ["request.prompt", r"contract\.$"]}, True),
    ({"regex": ["request.prompt", r"^I need"]}, False),  # ^ is the start of the text, not of a line
    ({"regex": ["request.prompt", "LEGAL"]}, False),
    ({"regex": ["request.prompt", "LEGAL", {"ignore_case": True}]}, True),
    ({"regex": ["request.prompt", "LEGAL", {"ignore_case": False}]}, False),
    ({"regex": ["key.prefix", "^ocw_"]}, True),
    ({"keywords": ["request.prompt", ["tax", "legal"]]}, True),
    ({"keywords": ["request.prompt", ["tax", "lawyer"]]}, False),
    ({"exists": "metadata.priority"}, True),
    ({"exists": "metadata.note"}, True),  # present with null
    ({"exists": "metadata.absent"}, False),
    ({"exists": "request.max_tokens"}, True),
    ({"eq": ["metadata.team.region.name", "eu"]}, True),
    ({"eq": ["metadata.team.region.name", "us"]}, False),
    ({"eq": ["key.id", "k_abc"]}, True),
    ({"eq": ["key.name", "backend"]}, True),
    ({"eq": ["org.slug", "acme"]}, True),
    ({"eq": ["request.model", "best_general"]}, True),
    (True, True),
])
def test_each_operator(condition, expected):
    assert holds(condition) is expected


def test_max_tokens_not_sent_is_missing():
    assert holds({"exists": "request.max_tokens"}, max_tokens=None) is False
    assert holds({"lt": ["request.max_tokens", 10]}, max_tokens=None) is False


def test_nested_all_any_not():
    condition = {"all": [
        {"any": [{"eq": ["org.tier", "free"]}, {"contains": ["metadata.tags", "beta"]}]},
        {"not": {"eq": ["metadata.priority", "low"]}},
        {"not": {"not": {"exists": "metadata.user_id"}}},
    ]}
    assert holds(condition) is True
    assert holds(condition, metadata={"tags": ["beta"], "priority": "low", "user_id": "u"}) is False
    assert holds(condition, metadata={"tags": [], "user_id": "u"}) is False
    assert holds({"any": [{"eq": ["org.tier", "free"]}, {"eq": ["org.tier", "pro"]}]}) is False
    assert holds({"all": [{"eq": ["org.tier", "enterprise"]}, {"eq": ["org.slug", "other"]}]}) is False


def test_missing_fields_make_conditions_false():
    for condition in (
        {"eq": ["metadata.nope", "x"]},
        {"in": ["metadata.nope", ["x"]]},
        {"contains": ["metadata.nope", "x"]},
        {"gt": ["metadata.nope", 1]},
        {"regex": ["metadata.nope", ".*"]},
        {"keywords": ["metadata.nope", ["x"]]},
        {"eq": ["metadata.team.nope.deeper", "x"]},
        {"eq": ["metadata.user_id.deeper", "x"]},  # walking into a string
    ):
        assert holds(condition) is False, condition


@pytest.mark.parametrize("metadata", [
    {"score": "high", "tags": 7, "user_id": 5, "team": ["eu"]},
    {"score": None, "tags": None, "user_id": None, "team": None},
    {"score": [1], "tags": {"legal": 1}, "user_id": {"a": 1}, "team": "eu"},
    {"score": float("nan"), "tags": [["legal"]], "user_id": b"u-42", "team": 3},
    {"score": True, "tags": [None, 1, {"x": 1}], "user_id": ["u-42"], "team": {"region": 5}},
])
def test_odd_request_data_is_false_not_an_error(metadata):
    conditions = [
        {"gt": ["metadata.score", 1]}, {"lte": ["metadata.score", 100]},
        {"eq": ["metadata.user_id", "u-42"]}, {"in": ["metadata.user_id", ["u-42"]]},
        {"contains": ["metadata.tags", "legal"]}, {"regex": ["metadata.user_id", "u"]},
        {"keywords": ["metadata.tags", ["legal"]]}, {"eq": ["metadata.team.region.name", "eu"]},
    ]
    for condition in conditions:
        assert holds(condition, metadata=metadata) is False, (condition, metadata)


def test_odd_facts_never_raise():
    odd = [
        dict(metadata=None), dict(metadata=["not", "a", "dict"]), dict(prompt=None),
        dict(prompt=123), dict(max_tokens="many"), dict(org_tier=None), dict(prompt="bad \ud800 surrogate legal"),
    ]
    rules = compile_rules([
        rule("a", {"regex": ["request.prompt", "x"]}, stop=False),
        rule("b", {"keywords": ["request.prompt", ["legal"]]}, stop=False),
        rule("c", {"gt": ["request.max_tokens", 1]}, stop=False),
        rule("d", {"in": ["org.tier", ["pro"]]}, stop=False),
        rule("e", {"contains": ["metadata.tags", "x"]}, stop=False),
    ])
    for overrides in odd:
        rules.evaluate(facts(**overrides))
    assert rules.evaluate(facts(prompt="bad \ud800 surrogate legal"))[1] == ["b", "c"]


def test_numeric_strings_are_not_numbers():
    assert holds({"gt": ["metadata.score", 1]}, metadata={"score": "5"}) is False


# --- regex and keywords ----------------------------------------------------------------

def test_regex_is_a_search_not_a_full_match():
    assert holds({"regex": ["request.prompt", "Legal"]}) is True


def test_catastrophic_pattern_runs_in_linear_time():
    condition = compile_condition({"regex": ["request.prompt", "(a+)+$"]})
    started = time.perf_counter()
    assert condition.test(facts(prompt="a" * 30_000 + "!")) is False
    assert time.perf_counter() - started < 2.0


def test_python_re_is_not_used():
    tree = ast.parse(Path(catalog.rules.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "re2" in imported
    assert not imported & {"re", "regex", "sre_compile", "sre_parse"}


def test_backreference_is_rejected_with_a_clear_error():
    error = error_of({"regex": ["request.prompt", r"(a)\1"]})
    assert error.path == "condition.regex[1]"
    assert error.message.startswith("pattern is not valid RE2 syntax: ")
    assert r"\1" in error.message


def test_lookahead_is_rejected():
    assert "not valid RE2 syntax" in error_of({"regex": ["request.prompt", "a(?=b)"]}).message


def test_keywords_are_whole_words_and_case_insensitive():
    legal = compile_condition({"keywords": ["request.prompt", ["legal"]]})
    assert legal.test(facts(prompt="Legal advice")) is True
    assert legal.test(facts(prompt="LEGAL")) is True
    assert legal.test(facts(prompt="is this (legal)?")) is True
    assert legal.test(facts(prompt="illegally")) is False
    assert legal.test(facts(prompt="paralegal")) is False
    assert legal.test(facts(prompt="legal_team")) is False


def test_keywords_are_escaped_and_unicode_aware():
    assert holds({"keywords": ["request.prompt", ["c++"]]}, prompt="write C++ code") is True
    assert holds({"keywords": ["request.prompt", ["c++"]]}, prompt="write c++x") is False
    assert holds({"keywords": ["request.prompt", ["a.b"]]}, prompt="axb") is False
    assert holds({"keywords": ["request.prompt", ["café"]]}, prompt="Un CAFÉ, merci") is True
    assert holds({"keywords": ["request.prompt", ["café"]]}, prompt="cafés") is False
    assert holds({"keywords": ["request.prompt", ["straße"]]}, prompt="Hauptstraße 1") is False


def test_multi_word_keywords_match_across_line_breaks():
    condition = {"keywords": ["request.prompt", ["legal advice"]]}
    assert holds(condition, prompt="need legal\n  advice now") is True
    assert holds(condition, prompt="legaladvice") is False


def test_prompt_matching_is_capped():
    cap = catalog.rules.PROMPT_CAP
    assert cap == 100_000
    late = "x" * cap + " legal"
    assert holds({"keywords": ["request.prompt", ["legal"]]}, prompt=late) is False
    assert holds({"contains": ["request.prompt", "legal"]}, prompt=late) is False
    assert holds({"regex": ["request.prompt", "x$"]}, prompt=late) is True  # the text ends at the cap
    assert holds({"keywords": ["request.prompt", ["legal"]]}, prompt="x" * (cap - 6) + " legal") is True


def test_the_cap_applies_only_to_the_prompt():
    long_value = "x" * 100_010 + "legal"
    assert holds({"contains": ["metadata.blob", "legal"]}, metadata={"blob": long_value}) is True


# --- rule sets ------------------------------------------------------------------------

def test_first_match_wins_by_default():
    rules = compile_rules([
        rule("legal", {"keywords": ["request.prompt", ["legal"]]}, {"route": "legal_model"}),
        rule("vip", {"eq": ["metadata.vip", True]}, {"route": "premium"}),
        rule("default", True, {"route": "general"}),
    ])
    assert rules.evaluate(facts()) == (Action(route="legal_model"), ["legal"])
    assert rules.evaluate(facts(prompt="hi")) == (Action(route="premium"), ["vip"])
    assert rules.evaluate(facts(prompt="hi", metadata={})) == (Action(route="general"), ["default"])


def test_no_match_gives_none():
    rules = compile_rules([rule("free", {"eq": ["org.tier", "free"]})])
    assert rules.evaluate(facts()) == (None, [])
    assert compile_rules([]).evaluate(facts()) == (None, [])


def test_stop_false_merges_later_keys_over_earlier():
    rules = compile_rules([
        rule("beta", {"contains": ["metadata.tags", "beta"]}, {"strategy": "latency", "route": "fast"}, stop=False),
        rule("high", {"eq": ["metadata.priority", "high"]}, {"strategy": "cost"}, stop=False),
        rule("pin", {"eq": ["key.name", "backend"]}, {"deployment": "gpt-4o-eu"}),
        rule("never", True, {"route": "unreached"}),
    ])
    action, names = rules.evaluate(facts())
    assert names == ["beta", "high", "pin"]
    # strategy: the later "cost" wins; deployment replaces the earlier route (one target slot)
    assert action == Action(route=None, deployment="gpt-4o-eu", strategy="cost")


def test_stop_false_without_later_match_keeps_its_action():
    rules = compile_rules([
        rule("tag", True, {"strategy": "weighted"}, stop=False),
        rule("free", {"eq": ["org.tier", "free"]}, {"route": "cheap"}),
    ])
    assert rules.evaluate(facts()) == (Action(strategy="weighted"), ["tag"])


def test_catch_all_true():
    rules = compile_rules([rule("all", True, {"strategy": "fallback"})])
    assert rules.evaluate(facts(metadata={})) == (Action(strategy="fallback"), ["all"])
    assert len(rules) == 1 and isinstance(rules, CompiledRules)


# --- limits ---------------------------------------------------------------------------

def nested_not(levels: int):
    condition = {"exists": "metadata.user_id"}
    for _ in range(levels - 1):
        condition = {"not": condition}
    return condition


def test_depth_limit():
    compile_condition(nested_not(10))
    error = error_of(nested_not(11))
    assert error.message == "conditions are nested more than 10 levels deep"
    assert error.path == "condition" + ".not" * 10


def test_very_deep_input_fails_cleanly():
    assert error_of(nested_not(5000)).message == "conditions are nested more than 10 levels deep"


def test_node_limit():
    compile_condition({"any": [{"exists": "metadata.a"}] * 199})
    error = error_of({"any": [{"exists": "metadata.a"}] * 200})
    assert (error.path, error.message) == ("condition.any[199]", "condition has more than 200 nodes")
    # reported once, however large the input
    problems = validate_rules([rule(when={"any": [{"exists": "metadata.a"}] * 100_000})])
    assert problems == ["rules[0].when.any[199]: condition has more than 200 nodes"]


def test_node_limit_is_per_condition():
    ok = {"any": [{"exists": "metadata.a"}] * 150}
    compile_rules([rule("a", ok), rule("b", ok)])


def test_field_length_limit():
    compile_condition({"exists": "metadata." + "k" * 191})
    error = error_of({"exists": "metadata." + "k" * 192})
    assert (error.path, error.message) == ("condition.exists", "field is longer than 200 characters")


def test_list_length_limit():
    compile_condition({"in": ["metadata.user_id", list(range(1000))]})
    error = error_of({"in": ["metadata.user_id", list(range(1001))]})
    assert (error.path, error.message) == ("condition.in[1]", "list has more than 1000 items")


def test_pattern_length_limit():
    compile_condition({"regex": ["request.prompt", "a" * 1000]})
    error = error_of({"regex": ["request.prompt", "a" * 1001]})
    assert (error.path, error.message) == ("condition.regex[1]", "pattern is longer than 1000 characters")


def test_keyword_limits():
    compile_condition({"keywords": ["request.prompt", [f"{'w' * 97}{i:03d}" for i in range(200)]]})
    error = error_of({"keywords": ["request.prompt", [f"w{i}" for i in range(201)]]})
    assert (error.path, error.message) == ("condition.keywords[1]", "more than 200 keywords")
    error = error_of({"keywords": ["request.prompt", ["ok", "w" * 101]]})
    assert error.path == "condition.keywords[1][1]"
    assert error.message.startswith("a keyword must be a non-blank string of at most 100 characters, got ")


def test_rule_count_limit():
    assert validate_rules([rule(f"r{i}") for i in range(1000)]) == []
    assert validate_rules([rule(f"r{i}") for i in range(1001)]) == ["rules: more than 1000 rules"]


# --- every validation message, with its path -------------------------------------------

CONDITION_ERRORS = [
    ([1, 2], "condition", "a condition must be true or an object with exactly one operator key, got a list"),
    (False, "condition", "a condition must be true or an object with exactly one operator key, got false"),
    ({}, "condition", "a condition must be true or an object with exactly one operator key, got {}"),
    ({"eq": ["org.tier", "x"], "ne": ["org.tier", "y"]}, "condition",
     "a condition must be true or an object with exactly one operator key, got an object with keys 'eq', 'ne'"),
    ({"matches": ["org.tier", "x"]}, "condition",
     "unknown operator 'matches'; allowed: all, any, not, exists, eq, ne, in, contains, gt, gte, lt, lte, "
     "regex, keywords"),
    ({"not": True}, "condition.not", "true is only allowed as a whole condition (a catch-all), not inside one"),
    ({"all": []}, "condition.all", "'all' needs a non-empty list of conditions"),
    ({"any": {"eq": ["org.tier", "x"]}}, "condition.any", "'any' needs a non-empty list of conditions"),
    ({"eq": ["org.tier"]}, "condition.eq", "'eq' takes [field, value]"),
    ({"ne": "org.tier"}, "condition.ne", "'ne' takes [field, value]"),
    ({"contains": ["metadata.tags", "a", "b"]}, "condition.contains", "'contains' takes [field, value]"),
    ({"in": ["org.tier"]}, "condition.in", "'in' takes [field, [value, ...]]"),
    ({"gt": ["metadata.score"]}, "condition.gt", "'gt' takes [field, number]"),
    ({"regex": ["request.prompt"]}, "condition.regex",
     "'regex' takes [field, pattern] or [field, pattern, {\"ignore_case\": true}]"),
    ({"keywords": ["request.prompt", ["a"], 1]}, "condition.keywords", "'keywords' takes [field, [\"word\", ...]]"),
    ({"exists": 5}, "condition.exists", "field must be a string such as \"metadata.user_id\", got 5"),
    ({"eq": [None, "x"]}, "condition.eq[0]", "field must be a string such as \"metadata.user_id\", got null"),
    ({"eq": ["user.id", "x"]}, "condition.eq[0]", "unknown field root 'user'; allowed roots: metadata, key, org, request"),
    ({"exists": "metadata"}, "condition.exists",
     "field 'metadata' needs metadata keys separated by single dots, such as metadata.user_id"),
    ({"exists": "metadata.a..b"}, "condition.exists",
     "field 'metadata.a..b' needs metadata keys separated by single dots, such as metadata.user_id"),
    ({"eq": ["key.secret", "x"]}, "condition.eq[0]", "unknown field 'key.secret'; allowed: key.id, key.name, key.prefix"),
    ({"eq": ["org", "x"]}, "condition.eq[0]", "unknown field 'org'; allowed: org.slug, org.tier"),
    ({"eq": ["request.messages", "x"]}, "condition.eq[0]",
     "unknown field 'request.messages'; allowed: request.model, request.prompt, request.max_tokens"),
    ({"eq": ["org.tier", ["pro"]]}, "condition.eq[1]", "value must be a string, number, boolean or null, got a list"),
    ({"contains": ["metadata.tags", {"a": 1}]}, "condition.contains[1]",
     "value must be a string, number, boolean or null, got an object with keys 'a'"),
    ({"eq": ["metadata.score", float("nan")]}, "condition.eq[1]",
     "value must be a string, number, boolean or null, got nan"),
    ({"in": ["org.tier", ["pro", ["x"]]]}, "condition.in[1][1]",
     "value must be a string, number, boolean or null, got a list"),
    ({"in": ["org.tier", []]}, "condition.in[1]", "'in' needs a non-empty list of values"),
    ({"in": ["org.tier", "pro"]}, "condition.in[1]", "'in' needs a non-empty list of values"),
    ({"gt": ["metadata.score", "5"]}, "condition.gt[1]", "'gt' compares with a number, got '5'"),
    ({"lte": ["metadata.score", True]}, "condition.lte[1]", "'lte' compares with a number, got true"),
    ({"regex": ["request.prompt", 5]}, "condition.regex[1]", "pattern must be a string, got 5"),
    ({"regex": ["request.prompt", "["]}, "condition.regex[1]", "pattern is not valid RE2 syntax: missing ]: ["),
    ({"regex": ["request.prompt", "a\ud800"]}, "condition.regex[1]", "pattern is not valid Unicode text"),
    ({"regex": ["request.prompt", "a", "i"]}, "condition.regex[2]",
     "flags must be an object such as {\"ignore_case\": true}, got 'i'"),
    ({"regex": ["request.prompt", "a", {"multiline": True}]}, "condition.regex[2]",
     "unknown flag 'multiline'; allowed: ignore_case"),
    ({"regex": ["request.prompt", "a", {"ignore_case": "yes"}]}, "condition.regex[2]",
     "ignore_case must be true or false"),
    ({"keywords": ["request.prompt", []]}, "condition.keywords[1]", "'keywords' needs a non-empty list of keywords"),
    ({"keywords": ["request.prompt", "legal"]}, "condition.keywords[1]",
     "'keywords' needs a non-empty list of keywords"),
    ({"keywords": ["request.prompt", ["ok", "  "]]}, "condition.keywords[1][1]",
     "a keyword must be a non-blank string of at most 100 characters, got '  '"),
    ({"keywords": ["request.prompt", [3]]}, "condition.keywords[1][0]",
     "a keyword must be a non-blank string of at most 100 characters, got 3"),
    ({"keywords": ["request.prompt", ["a\udc00"]]}, "condition.keywords[1][0]", "keyword is not valid Unicode text"),
]


@pytest.mark.parametrize("condition, path, message", CONDITION_ERRORS)
def test_condition_error_messages(condition, path, message):
    error = error_of(condition)
    assert (error.path, error.message) == (path, message)
    assert str(error) == f"{path}: {message}"
    assert isinstance(error, ValueError)


def test_paths_inside_rule_sets():
    raw = [rule("ok"), rule("bad", {"all": [{"eq": ["org.tier", "x"]}, {"regex": ["request.prompt", "(a)\\1"]}]})]
    with pytest.raises(RuleError) as caught:
        compile_rules(raw)
    assert caught.value.path == "rules[1].when.all[1].regex[1]"


def test_compile_condition_accepts_a_path_prefix():
    with pytest.raises(RuleError) as caught:
        compile_condition({"all": []}, path="policy.when")
    assert str(caught.value) == "policy.when.all: 'all' needs a non-empty list of conditions"


RULE_ERRORS = [
    ({"name": "x"}, "rules", "rules must be a list of rule objects, got an object with keys 'name'"),
    ([["name", "when", "then"]], "rules[0]", "a rule must be an object with name, when and then, got a list"),
    ([rule(priority=1)], "rules[0]", "unknown key 'priority'; allowed: name, when, then, stop"),
    ([{"when": True, "then": {"route": "a"}}], "rules[0]", "missing 'name'"),
    ([{"name": "a", "then": {"route": "a"}}], "rules[0]", "missing 'when'"),
    ([{"name": "a", "when": True}], "rules[0]", "missing 'then'"),
    ([rule(name="")], "rules[0].name", "name must be a string of 1-100 characters"),
    ([rule(name="n" * 101)], "rules[0].name", "name must be a string of 1-100 characters"),
    ([rule(name=7)], "rules[0].name", "name must be a string of 1-100 characters"),
    ([rule("a"), rule("b"), rule("a")], "rules[2].name", "duplicate rule name 'a' (also rules[0])"),
    ([rule(stop="no")], "rules[0].stop", "stop must be true or false"),
    ([rule(then="legal")], "rules[0].then",
     "an action must be an object with route, deployment or strategy, got 'legal'"),
    ([rule(then={"route": "a", "model": "b"})], "rules[0].then",
     "unknown key 'model'; allowed: route, deployment, strategy"),
    ([{"name": "a", "when": True, "then": {}}], "rules[0].then",
     "an action needs at least one of route, deployment, strategy"),
    ([rule(then={"route": "a", "deployment": "b"})], "rules[0].then", "route and deployment are mutually exclusive"),
    ([rule(then={"route": ""})], "rules[0].then.route", "route must be a string of 1-100 characters"),
    ([rule(then={"deployment": 3})], "rules[0].then.deployment", "deployment must be a string of 1-100 characters"),
    ([rule(then={"strategy": "random"})], "rules[0].then.strategy",
     "strategy must be one of cost, latency, capability, weighted, least_busy, fallback"),
    ([rule(when={"exists": "user"})], "rules[0].when.exists",
     "unknown field root 'user'; allowed roots: metadata, key, org, request"),
]


@pytest.mark.parametrize("raw, path, message", RULE_ERRORS)
def test_rule_error_messages(raw, path, message):
    with pytest.raises(RuleError) as caught:
        compile_rules(raw)
    assert (caught.value.path, caught.value.message) == (path, message)
    assert f"{path}: {message}" in validate_rules(raw)


def test_every_strategy_is_accepted():
    for strategy in ("cost", "latency", "capability", "weighted", "least_busy", "fallback"):
        compile_rules([rule(then={"strategy": strategy, "route": "r"})])


def test_validate_rules_reports_every_problem():
    raw = [
        rule("a", {"all": [{"eq": ["user.id", "x"]}, {"regex": ["request.prompt", "(a)\\1"]}]}),
        "not a rule",
        {"name": "a", "when": {"gt": ["metadata.score", "high"]}, "then": {"route": "x", "deployment": "y"},
         "stop": 1},
    ]
    assert validate_rules(raw) == [
        "rules[0].when.all[0].eq[0]: unknown field root 'user'; allowed roots: metadata, key, org, request",
        "rules[0].when.all[1].regex[1]: pattern is not valid RE2 syntax: invalid escape sequence: \\1",
        "rules[1]: a rule must be an object with name, when and then, got 'not a rule'",
        "rules[2].name: duplicate rule name 'a' (also rules[0])",
        "rules[2].stop: stop must be true or false",
        "rules[2].when.gt[1]: 'gt' compares with a number, got 'high'",
        "rules[2].then: route and deployment are mutually exclusive",
    ]


def test_validate_rules_accepts_a_valid_set():
    assert validate_rules([rule("a", {"eq": ["org.tier", "pro"]}), rule("b")]) == []


def test_compiled_rules_are_reusable_and_do_not_share_state():
    rules = compile_rules([
        rule("legal", {"keywords": ["request.prompt", ["legal"]]}, {"route": "legal"}),
        rule("rest", True, {"route": "general"}),
    ])
    for _ in range(3):
        assert rules.evaluate(facts())[1] == ["legal"]
        assert rules.evaluate(facts(prompt="hello"))[1] == ["rest"]


# --- docs/routing-rules.md stays true -------------------------------------------------

DOC = (Path(__file__).resolve().parents[2] / "docs" / "routing-rules.md").read_text()


def documented_messages() -> list[str]:
    """The first-column `message` of every table under "## Error messages"."""
    section = DOC.split("## Error messages", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(.+?)` \|", section, flags=re.MULTILINE)


def is_documented(message: str) -> bool:
    for template in documented_messages():
        # "<…>" in the docs stands for the part that varies
        pattern = ".+".join(re.escape(part) for part in re.split(r"<[^>]*>", template))
        if re.fullmatch(pattern, message):
            return True
    return False


def test_an_re2_failure_on_keywords_is_a_rule_error(monkeypatch):
    # Keywords are escaped, so RE2 should never reject them; if it ever does
    # (say, memory limits), saving the rules fails cleanly instead of crashing.
    def refuse(pattern, options=None):
        raise catalog.rules.re2.error(b"pattern too large - compile failed")

    monkeypatch.setattr(catalog.rules.re2, "compile", refuse)
    error = error_of({"keywords": ["request.prompt", ["legal"]]})
    assert (error.path, error.message) == ("condition.keywords[1]", KEYWORD_RE2_MESSAGE)


KEYWORD_RE2_MESSAGE = "keyword list is not valid RE2 syntax: pattern too large - compile failed"
LIMIT_MESSAGES = [
    "conditions are nested more than 10 levels deep", "condition has more than 200 nodes",
    "field is longer than 200 characters", "list has more than 1000 items",
    "pattern is longer than 1000 characters", "more than 200 keywords", "more than 1000 rules",
    "a keyword must be a non-blank string of at most 100 characters, got 'www'",
]


TESTED_MESSAGES = [m for _, _, m in CONDITION_ERRORS + RULE_ERRORS] + LIMIT_MESSAGES + [KEYWORD_RE2_MESSAGE]


@pytest.mark.parametrize("message", TESTED_MESSAGES)
def test_every_error_message_is_documented(message):
    assert is_documented(message), message


def test_every_documented_message_is_tested():
    for template in documented_messages():
        pattern = ".+".join(re.escape(part) for part in re.split(r"<[^>]*>", template))
        assert any(re.fullmatch(pattern, message) for message in TESTED_MESSAGES), template


def test_doc_examples_are_valid_and_behave_as_described():
    blocks = re.findall(r"```json\n(.*?)```", DOC, flags=re.DOTALL)
    rule_sets = [json.loads(block) for block in blocks if block.lstrip().startswith("[")]
    assert len(rule_sets) == 2
    for rule_set in rule_sets:
        assert validate_rules(rule_set) == []
    single_conditions = [line for block in blocks if block.lstrip().startswith("{")
                         for line in block.splitlines() if line.strip()]
    assert single_conditions
    for line in single_conditions:
        compile_condition(json.loads(line))

    first, merging = (compile_rules(rule_set) for rule_set in rule_sets)
    assert first.evaluate(facts(prompt="Is this contract\nlaw?"))[0] == Action(route="legal_expert")
    assert first.evaluate(facts(prompt="hi"))[0] == Action(route="general")
    action, names = merging.evaluate(facts(metadata={"tags": ["beta"], "priority": "high"}))
    assert action == Action(deployment="gpt-4o-eu", strategy="cost")
    assert names == ["beta users get the fast route", "high priority: pick by cost", "the backend key is pinned"]
