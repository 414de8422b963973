"""GrowthBook targeting conditions: Mongo-style JSON evaluated against user attributes.

A condition maps attribute paths (``"device"``, dotted ``"hover_ms_by_kind.image"``) to a
literal value or to an operator object (``{"$gt": 0.75}``), combined with ``$and``, ``$or``,
``$nor`` and ``$not``. There are two ways to run one, with identical results:

- :func:`eval_condition` interprets the JSON each time (imports, one-off checks);
- :func:`compile_condition` turns it once into nested closures, so the decision hot path does
  no parsing of the condition at call time (a simple comparison costs a few hundred ns).

Semantics follow GrowthBook's conformance suite. Ordering operators (``$gt``, ``$lte``, ...)
coerce like JavaScript's ``<``: a missing attribute is ``null`` and compares as ``0``, and a
number compares with a numeric string as a number. Equality is type-strict (``true`` never
equals ``1``, ``"10"`` never equals ``10``). A condition with an invalid part (an unknown
operator, a ``$regex`` that does not compile, an operand of the wrong type) never matches;
``compile_condition(..., strict=True)`` (the default) reports it as a :class:`ConditionError`
instead, so configuration mistakes surface at load time.

>>> rule = compile_condition({"device": "mobile", "local_hour": {"$gte": 20}})
>>> rule({"device": "mobile", "local_hour": 21}), rule({"device": "desktop", "local_hour": 21})
(True, False)
>>> eval_condition({"hover_ms_by_kind.image": {"$gt": 500}}, {"hover_ms_by_kind": {"image": 800}})
True
>>> compile_condition({"scroll_depth_max": {"$gtt": 0.75}})
Traceback (most recent call last):
...
trimtab.targeting.conditions.ConditionError: scroll_depth_max.$gtt: unknown operator
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from trimtab.targeting.jsvalues import (
    deep_equal,
    is_number,
    js_compare,
    js_truthy,
    json_type,
    strict_equal,
)
from trimtab.targeting.versions import padded_version

__all__ = [
    "ConditionError",
    "compile_condition",
    "condition_source",
    "eval_condition",
    "get_path",
    "walk_path",
]

Predicate = Callable[[Mapping[str, Any]], bool]
ValueTest = Callable[[Any], bool]
SavedGroups = Mapping[str, Any]

_ARRAY = (list, tuple)
_COMBINATORS = frozenset({"$and", "$or", "$nor"})
_ORDERING = frozenset({"$lt", "$lte", "$gt", "$gte"})
_VERSION = frozenset({"$veq", "$vne", "$vlt", "$vlte", "$vgt", "$vgte"})
_MEMBERSHIP = frozenset({"$in", "$nin", "$ini", "$nini", "$all", "$alli"})
_GROUP = frozenset({"$inGroup", "$notInGroup"})
_TYPE_NAMES = frozenset({"null", "boolean", "number", "string", "array", "object"})
_KNOWN = (
    _ORDERING
    | _VERSION
    | _MEMBERSHIP
    | _GROUP
    | {"$eq", "$ne", "$exists", "$type", "$not", "$size", "$elemMatch", "$regex", "$regexi"}
)
_EMPTY: Mapping[str, Any] = {}


class ConditionError(ValueError):
    """An invalid condition: ``path`` locates the bad part (``$and[1].bday.$regex``), ``reason``
    says what is wrong with it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path or '(condition)'}: {reason}")
        self.path = path
        self.reason = reason


# --------------------------------------------------------------------------- shared pieces


def get_path(obj: Any, path: str) -> Any:
    """The value at a dotted path, or ``None`` when any step is missing. As in JavaScript,
    arrays expose their indices (``"tags.0"``) and ``length``.

    This is trimtab's one reader of attribute paths: conditions, ``why`` texts and policy
    features all read ``interest_share.sport`` the same way.

    >>> get_path({"tags": ["a", "b"], "n": {"x": 1}}, "tags.length"), get_path({"n": 1}, "n.x")
    (2, None)
    """
    return walk_path(obj, path.split("."))


def walk_path(current: Any, parts: Sequence[str]) -> Any:
    """:func:`get_path` with the path already split (compile the split once)."""
    for part in parts:
        if isinstance(current, Mapping):
            if part not in current:
                return None
            current = current[part]
        elif isinstance(current, _ARRAY):
            if part == "length":
                current = len(current)
            elif _is_index(part, len(current)):
                current = current[int(part)]
            else:
                return None
        else:
            return None
    return current


def _is_index(key: str, length: int) -> bool:
    return (
        key.isascii()
        and key.isdigit()
        and (key == "0" or key[0] != "0")
        and len(key) <= 10
        and int(key) < length
    )


def _is_operator_object(value: Any) -> bool:
    """A non-empty mapping whose keys all start with ``$`` holds operators; any other mapping
    is a literal object to compare with."""
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and k.startswith("$") for k in value)
    )


def _elem_match_on_value(condition: Mapping[str, Any]) -> bool:
    # Operators test each element itself; a condition (even one using only $and/$or/...)
    # tests each element's fields.
    return _is_operator_object(condition) and not any(k in _COMBINATORS for k in condition)


def _group_values(groups: SavedGroups, group_id: str) -> Sequence[Any]:
    entry = groups.get(group_id)
    if isinstance(entry, _ARRAY):
        return entry
    if isinstance(entry, Mapping):
        values = entry.get("values")
        if isinstance(values, _ARRAY):
            return values
    return ()


@lru_cache(maxsize=1024)
def _regex(pattern: str, insensitive: bool) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE if insensitive else 0)


def _version_orderable(a: Any, b: Any) -> bool:
    return (isinstance(a, str) and isinstance(b, str)) or (is_number(a) and is_number(b))


_VERSION_OPS: dict[str, Callable[[str, str], bool]] = {
    "$veq": str.__eq__,
    "$vne": str.__ne__,
    "$vlt": str.__lt__,
    "$vlte": str.__le__,
    "$vgt": str.__gt__,
    "$vgte": str.__ge__,
}
_ORDER_OPS: dict[str, Callable[[int], bool]] = {
    "$lt": lambda c: c < 0,
    "$lte": lambda c: c <= 0,
    "$gt": lambda c: c > 0,
    "$gte": lambda c: c >= 0,
}


# --------------------------------------------------------------------------- validation


def _check_condition(cond: Any, path: str, groups: SavedGroups, strict: bool) -> None:
    if not isinstance(cond, Mapping):
        raise ConditionError(path, f"a condition must be an object, not {json_type(cond)}")
    for key, value in cond.items():
        if not isinstance(key, str):
            raise ConditionError(path, f"attribute names must be strings, not {key!r}")
        here = f"{path}.{key}" if path else key
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, _ARRAY):
                raise ConditionError(here, "expects an array of conditions")
            for i, sub in enumerate(value):
                _check_condition(sub, f"{here}[{i}]", groups, strict)
        elif key == "$not":
            _check_condition(value, here, groups, strict)
        else:
            _check_value(value, here, groups, strict)


def _check_value(expected: Any, path: str, groups: SavedGroups, strict: bool) -> None:
    if _is_operator_object(expected):
        for op, operand in expected.items():
            _check_operator(op, operand, f"{path}.{op}", groups, strict)


def _check_operator(op: str, operand: Any, path: str, groups: SavedGroups, strict: bool) -> None:
    if op not in _KNOWN:
        raise ConditionError(path, "unknown operator")
    if op in _ORDERING or op in _VERSION:
        if not (isinstance(operand, str) or is_number(operand)):
            raise ConditionError(path, f"expects a number or a string, not {json_type(operand)}")
    elif op in _MEMBERSHIP:
        if not isinstance(operand, _ARRAY):
            raise ConditionError(path, f"expects an array, not {json_type(operand)}")
        if op in ("$all", "$alli"):
            for i, item in enumerate(operand):
                _check_value(item, f"{path}[{i}]", groups, strict)
    elif op in _GROUP:
        if not isinstance(operand, str):
            raise ConditionError(path, "expects a saved group id (a string)")
        if strict and operand not in groups:
            raise ConditionError(path, f"unknown saved group {operand!r}")
    elif op in ("$regex", "$regexi"):
        if not isinstance(operand, str):
            raise ConditionError(
                path, f"expects a regular expression string, not {json_type(operand)}"
            )
        try:
            _regex(operand, op == "$regexi")
        except (re.error, OverflowError) as exc:
            raise ConditionError(path, f"invalid regular expression: {exc}") from None
    elif op == "$type":
        if not isinstance(operand, str):
            raise ConditionError(path, "expects a type name")
        if strict and operand not in _TYPE_NAMES:
            raise ConditionError(path, f"unknown type name {operand!r}")
    elif op == "$elemMatch":
        if not isinstance(operand, Mapping):
            raise ConditionError(path, "expects a condition object")
        if _elem_match_on_value(operand):
            _check_value(operand, path, groups, strict)
        else:
            _check_condition(operand, path, groups, strict)
    elif op in ("$not", "$size"):
        _check_value(operand, path, groups, strict)
    elif op == "$exists" and strict and not isinstance(operand, bool):
        raise ConditionError(path, "expects true or false")


def _is_valid(condition: Any, groups: SavedGroups) -> bool:
    try:
        _check_condition(condition, "", groups, strict=False)
    except ConditionError:
        return False
    return True


# --------------------------------------------------------------------------- interpreter


def eval_condition(
    condition: Mapping[str, Any],
    attributes: Mapping[str, Any],
    saved_groups: SavedGroups | None = None,
) -> bool:
    """Whether ``attributes`` satisfy ``condition`` (False when the condition is invalid).

    >>> eval_condition({"tags": {"$in": ["sale", "new"]}}, {"tags": ["new", "red"]})
    True
    """
    groups = saved_groups if saved_groups is not None else _EMPTY
    if not _is_valid(condition, groups):
        return False
    return _match(condition, attributes, groups)


def _match(cond: Mapping[str, Any], obj: Any, groups: SavedGroups) -> bool:
    for key, value in cond.items():
        if key == "$or":
            if value and not any(_match(c, obj, groups) for c in value):
                return False
        elif key == "$nor":
            if not value or any(_match(c, obj, groups) for c in value):
                return False
        elif key == "$and":
            if not all(_match(c, obj, groups) for c in value):
                return False
        elif key == "$not":
            if _match(value, obj, groups):
                return False
        elif not _test(value, get_path(obj, key), groups):
            return False
    return True


def _test(expected: Any, actual: Any, groups: SavedGroups, insensitive: bool = False) -> bool:
    if _is_operator_object(expected):
        return all(_apply(op, actual, operand, groups) for op, operand in expected.items())
    if insensitive and isinstance(expected, str) and isinstance(actual, str):
        return expected.lower() == actual.lower()
    return deep_equal(expected, actual)


def _in_list(value: Any, values: Sequence[Any], insensitive: bool) -> bool:
    if insensitive and isinstance(value, str):
        folded = value.lower()
        return any(isinstance(x, str) and x.lower() == folded for x in values)
    return any(strict_equal(value, x) for x in values)


def _is_in(actual: Any, values: Sequence[Any], insensitive: bool = False) -> bool:
    # An array attribute matches when any of its elements is in the list.
    if isinstance(actual, _ARRAY):
        return any(_in_list(el, values, insensitive) for el in actual)
    return _in_list(actual, values, insensitive)


def _elem_match(actual: Any, condition: Mapping[str, Any], groups: SavedGroups) -> bool:
    if not isinstance(actual, _ARRAY):
        return False
    if _elem_match_on_value(condition):
        return any(_test(condition, x, groups) for x in actual if x is not None)
    return any(_match(condition, x, groups) for x in actual if x is not None)


def _apply(op: str, actual: Any, operand: Any, groups: SavedGroups) -> bool:
    if op == "$eq":
        return strict_equal(actual, operand)
    if op == "$ne":
        return not strict_equal(actual, operand)
    if op in _ORDERING:
        order = js_compare(actual, operand)
        return order is not None and _ORDER_OPS[op](order)
    if op in _VERSION:
        if not _version_orderable(actual, operand):
            return op == "$vne"
        return _VERSION_OPS[op](padded_version(actual), padded_version(operand))
    if op in ("$in", "$ini"):
        return _is_in(actual, operand, op == "$ini")
    if op in ("$nin", "$nini"):
        return not _is_in(actual, operand, op == "$nini")
    if op == "$inGroup":
        return _is_in(actual, _group_values(groups, operand))
    if op == "$notInGroup":
        return not _is_in(actual, _group_values(groups, operand))
    if op == "$exists":
        return (actual is not None) if js_truthy(operand) else (actual is None)
    if op == "$type":
        return bool(json_type(actual) == operand)
    if op == "$not":
        return not _test(operand, actual, groups)
    if op == "$size":
        return isinstance(actual, _ARRAY) and _test(operand, len(actual), groups)
    if op == "$elemMatch":
        return _elem_match(actual, operand, groups)
    if op in ("$all", "$alli"):
        insensitive = op == "$alli"
        return isinstance(actual, _ARRAY) and all(
            any(_test(item, el, groups, insensitive) for el in actual) for item in operand
        )
    # $regex / $regexi: validation has ruled out every other operator.
    return isinstance(actual, str) and _regex(operand, op == "$regexi").search(actual) is not None


# --------------------------------------------------------------------------- compiler


def compile_condition(
    condition: Mapping[str, Any],
    saved_groups: SavedGroups | None = None,
    *,
    strict: bool = True,
) -> Predicate:
    """Compile ``condition`` into a predicate over an attributes mapping.

    Saved groups are bound at compile time (recompile when they change). With ``strict``
    (the default) an invalid condition, an unknown saved group or an unknown ``$type`` name
    raises :class:`ConditionError`; without it the predicate behaves exactly like
    :func:`eval_condition` (an invalid condition never matches).
    """
    groups = saved_groups if saved_groups is not None else _EMPTY
    if strict:
        _check_condition(condition, "", groups, strict=True)
    elif not _is_valid(condition, groups):
        return _never
    return _compile_condition(condition, groups)


def _always(_: Any) -> bool:
    return True


def _never(_: Any) -> bool:
    return False


def _all_of(tests: Sequence[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda x: first(x) and second(x)
    if len(tests) == 3:
        first, second, third = tests
        return lambda x: first(x) and second(x) and third(x)
    chain = tuple(tests)

    def all_of(x: Any) -> bool:
        for test in chain:  # noqa: SIM110 - a plain loop is cheaper than all() + a generator
            if not test(x):
                return False
        return True

    return all_of


def _any_of(tests: Sequence[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    if len(tests) == 1:
        return tests[0]
    chain = tuple(tests)

    def any_of(x: Any) -> bool:
        for test in chain:  # noqa: SIM110 - a plain loop is cheaper than any() + a generator
            if test(x):
                return True
        return False

    return any_of


def _negate(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: not test(x)


def _compile_condition(cond: Mapping[str, Any], groups: SavedGroups) -> Predicate:
    parts: list[Predicate] = []
    for key, value in cond.items():
        if key == "$or":
            if value:
                parts.append(_any_of([_compile_condition(c, groups) for c in value]))
        elif key == "$nor":
            if not value:
                return _never
            parts.append(_negate(_any_of([_compile_condition(c, groups) for c in value])))
        elif key == "$and":
            parts.append(_all_of([_compile_condition(c, groups) for c in value]))
        elif key == "$not":
            parts.append(_negate(_compile_condition(value, groups)))
        else:
            fused = _fused_field(key, value, groups) if "." not in key else None
            parts.append(fused or _compile_field(key, _compile_test(value, groups)))
    return _all_of(parts)


def _fused_field(path: str, expected: Any, groups: SavedGroups) -> Predicate | None:
    """One closure for the commonest fields (a string or boolean literal, one numeric
    comparison, membership of a string), so the hot path makes one call instead of two."""
    if type(expected) is str:
        return lambda attrs: attrs.get(path) == expected
    if type(expected) is bool:
        return lambda attrs: attrs.get(path) is expected
    if not (isinstance(expected, Mapping) and len(expected) == 1):
        return None
    ((op, arg),) = expected.items()
    if op in ("$in", "$nin", "$inGroup", "$notInGroup"):
        values = _group_values(groups, arg) if op in _GROUP else arg
        if not isinstance(values, _ARRAY):
            return None
        contains = _membership(values, insensitive=False)
        strings = frozenset(x for x in values if type(x) is str)
        if op in ("$in", "$inGroup"):

            def member(attrs: Mapping[str, Any]) -> bool:
                v = attrs.get(path)
                return v in strings if v.__class__ is str else contains(v)

            return member

        def not_member(attrs: Mapping[str, Any]) -> bool:
            v = attrs.get(path)
            return v not in strings if v.__class__ is str else not contains(v)

        return not_member
    if op not in _ORDERING or not is_number(arg):
        return None
    slow = _ordering(op, arg)
    if op == "$gt":

        def gt(attrs: Mapping[str, Any]) -> bool:
            v = attrs.get(path)
            return v > arg if v.__class__ is float or v.__class__ is int else slow(v)

        return gt
    if op == "$gte":

        def gte(attrs: Mapping[str, Any]) -> bool:
            v = attrs.get(path)
            return v >= arg if v.__class__ is float or v.__class__ is int else slow(v)

        return gte
    if op == "$lt":

        def lt(attrs: Mapping[str, Any]) -> bool:
            v = attrs.get(path)
            return v < arg if v.__class__ is float or v.__class__ is int else slow(v)

        return lt

    def lte(attrs: Mapping[str, Any]) -> bool:
        v = attrs.get(path)
        return v <= arg if v.__class__ is float or v.__class__ is int else slow(v)

    return lte


def condition_source(
    condition: Mapping[str, Any], saved_groups: SavedGroups | None, bind: Callable[[Any], str]
) -> str:
    """``condition`` as one Python expression over a mapping named ``attrs``, for code the
    engine generates (:mod:`trimtab.walkcode`): the same answer as
    ``compile_condition(condition, saved_groups, strict=False)`` without a call per part for
    the commonest fields (those :func:`_fused_field` fuses); other fields call their compiled
    predicate. ``bind(value)`` returns the name under which the generated code finds a value.

    >>> env = {}
    >>> def bind(value):
    ...     env[f"k{len(env)}"] = value
    ...     return f"k{len(env) - 1}"
    >>> code = condition_source({"device": "mobile", "f0": {"$gt": 0.5}}, None, bind)
    >>> eval(code, env, {"attrs": {"device": "mobile", "f0": 0.7}})
    True
    """
    groups = saved_groups if saved_groups is not None else _EMPTY
    if not _is_valid(condition, groups):
        return "False"
    return _source(condition, groups, bind)


def _source(cond: Mapping[str, Any], groups: SavedGroups, bind: Callable[[Any], str]) -> str:
    # mirrors _compile_condition part by part
    parts: list[str] = []
    for key, value in cond.items():
        if key == "$or":
            if value:
                parts.append("(" + " or ".join(_source(c, groups, bind) for c in value) + ")")
        elif key == "$nor":
            if not value:
                return "False"
            parts.append("(not (" + " or ".join(_source(c, groups, bind) for c in value) + "))")
        elif key == "$and":
            if value:
                parts.append("(" + " and ".join(_source(c, groups, bind) for c in value) + ")")
        elif key == "$not":
            parts.append(f"(not {_source(value, groups, bind)})")
        else:
            parts.append(_field_source(key, value, groups, bind))
    return "(" + " and ".join(parts) + ")" if parts else "True"


def _field_source(path: str, expected: Any, groups: SavedGroups, bind: Callable[[Any], str]) -> str:
    """One field as an expression: the cases of :func:`_fused_field` written out, else a call
    of the field's compiled predicate."""
    if "." not in path:
        get = f"attrs.get({path!r})"
        if type(expected) is str:
            return f"({get} == {expected!r})"
        if type(expected) is bool:
            return f"({get} is {expected!r})"
        if isinstance(expected, Mapping) and len(expected) == 1:
            ((op, arg),) = expected.items()
            values = _group_values(groups, arg) if op in _GROUP else arg
            if op in ("$in", "$nin", "$inGroup", "$notInGroup") and isinstance(values, _ARRAY):
                strings = bind(frozenset(x for x in values if type(x) is str))
                contains = bind(_membership(values, insensitive=False))
                # (a conditional expression evaluates its condition first: ``_v`` is bound there)
                if op in ("$in", "$inGroup"):
                    return (
                        f"(_v in {strings} if (_v := {get}).__class__ is str else {contains}(_v))"
                    )
                return (
                    f"(_v not in {strings} if (_v := {get}).__class__ is str "
                    f"else not {contains}(_v))"
                )
            if op in ("$regex", "$regexi"):  # valid: the pattern compiles
                pattern = bind(_regex(arg, op == "$regexi"))
                return f"(isinstance(_v := {get}, str) and {pattern}.search(_v) is not None)"
            if op in _ORDERING and is_number(arg):
                symbol = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
                bound = repr(arg) if math.isfinite(arg) else bind(arg)  # a literal when it can be
                return (
                    f"(_v {symbol} {bound} if (_v := {get}).__class__ is float "
                    f"or _v.__class__ is int else {bind(_ordering(op, arg))}(_v))"
                )
    fused = _fused_field(path, expected, groups) if "." not in path else None
    return f"{bind(fused or _compile_field(path, _compile_test(expected, groups)))}(attrs)"


def _compile_field(path: str, test: ValueTest) -> Predicate:
    parts = path.split(".")
    if len(parts) == 1:
        return lambda attrs: test(attrs.get(path))
    first, rest = parts[0], tuple(parts[1:])
    if len(rest) == 1:
        second = rest[0]

        def nested(attrs: Mapping[str, Any]) -> bool:
            value = attrs.get(first)
            if type(value) is dict:
                return test(value.get(second))
            return test(walk_path(value, rest))

        return nested
    return lambda attrs: test(walk_path(attrs.get(first), rest))


def _compile_test(expected: Any, groups: SavedGroups, insensitive: bool = False) -> ValueTest:
    if _is_operator_object(expected):
        return _all_of([_compile_operator(op, arg, groups) for op, arg in expected.items()])
    if insensitive and isinstance(expected, str):
        folded = expected.lower()
        return lambda v: isinstance(v, str) and v.lower() == folded
    return _equals(expected)


def _equals(expected: Any) -> ValueTest:
    """Literal equality with a condition value (see ``deep_equal``)."""
    if expected is None:
        return lambda v: v is None
    if isinstance(expected, bool):
        return lambda v: v is expected
    if isinstance(expected, str):
        return lambda v: expected == v
    if isinstance(expected, (int, float)):

        def equals_number(v: Any) -> bool:
            kind = type(v)
            if kind is int or kind is float:
                return bool(v == expected)
            return strict_equal(v, expected)

        return equals_number
    return lambda v: deep_equal(expected, v)


def _compile_operator(op: str, arg: Any, groups: SavedGroups) -> ValueTest:
    if op == "$eq":
        return _never if isinstance(arg, (list, tuple, Mapping)) else _equals(arg)
    if op == "$ne":
        return _always if isinstance(arg, (list, tuple, Mapping)) else _negate(_equals(arg))
    if op in _ORDERING:
        return _ordering(op, arg)
    if op in _VERSION:
        return _version(op, arg)
    if op in ("$in", "$ini", "$nin", "$nini"):
        contains = _membership(arg, insensitive=op in ("$ini", "$nini"))
        return contains if op in ("$in", "$ini") else _negate(contains)
    if op in _GROUP:
        contains = _membership(_group_values(groups, arg), insensitive=False)
        return contains if op == "$inGroup" else _negate(contains)
    if op == "$exists":
        return (lambda v: v is not None) if js_truthy(arg) else (lambda v: v is None)
    if op == "$type":
        return lambda v: json_type(v) == arg
    if op == "$not":
        return _negate(_compile_test(arg, groups))
    if op == "$size":
        size_test = _compile_test(arg, groups)
        return lambda v: isinstance(v, _ARRAY) and size_test(len(v))
    if op == "$elemMatch":
        return _elem_match_test(arg, groups)
    if op in ("$all", "$alli"):
        item_tests = tuple(_compile_test(item, groups, op == "$alli") for item in arg)
        return lambda v: (
            isinstance(v, _ARRAY) and all(any(test(el) for el in v) for test in item_tests)
        )
    pattern = _regex(arg, op == "$regexi")
    return lambda v: isinstance(v, str) and pattern.search(v) is not None


def _ordering(op: str, arg: Any) -> ValueTest:
    holds = _ORDER_OPS[op]

    def coerced(v: Any) -> bool:
        order = js_compare(v, arg)
        return order is not None and holds(order)

    if is_number(arg):
        # Number against number is the hot case: compare directly, coerce otherwise.
        if op == "$gt":
            return lambda v: v > arg if type(v) is float or type(v) is int else coerced(v)
        if op == "$gte":
            return lambda v: v >= arg if type(v) is float or type(v) is int else coerced(v)
        if op == "$lt":
            return lambda v: v < arg if type(v) is float or type(v) is int else coerced(v)
        return lambda v: v <= arg if type(v) is float or type(v) is int else coerced(v)
    return coerced


def _version(op: str, arg: Any) -> ValueTest:
    holds = _VERSION_OPS[op]
    padded_arg = padded_version(arg)
    mismatch = op == "$vne"

    def test(v: Any) -> bool:
        if not _version_orderable(v, arg):
            return mismatch
        return holds(padded_version(v), padded_arg)

    return test


def _membership(values: Sequence[Any], insensitive: bool) -> ValueTest:
    """``value in values`` with strict types; an array value matches when any element does."""
    strings = {x.lower() if insensitive else x for x in values if type(x) is str}
    numbers = {x for x in values if type(x) is int or type(x) is float}
    has_null = any(x is None for x in values)
    has_true = any(x is True for x in values)
    has_false = any(x is False for x in values)
    exact = all(type(x) in (str, int, float, bool) or x is None for x in values)

    def scalar_in(v: Any) -> bool:
        kind = type(v)
        if kind is str:
            return (v.lower() if insensitive else v) in strings
        if kind is int or kind is float:
            return v in numbers
        if v is None:
            return has_null
        if kind is bool:
            return has_true if v else has_false
        if isinstance(v, (list, tuple, Mapping)):
            return False  # JS compares containers by reference: never equal
        return _in_list(v, values, insensitive)

    if not exact:
        # Subclassed or container members: fall back to the general comparison.
        return lambda v: _is_in(v, values, insensitive)

    def contains(v: Any) -> bool:
        if v.__class__ is str and not insensitive:
            return v in strings
        if isinstance(v, _ARRAY):
            return any(scalar_in(el) for el in v)
        return scalar_in(v)

    return contains


def _elem_match_test(condition: Mapping[str, Any], groups: SavedGroups) -> ValueTest:
    if _elem_match_on_value(condition):
        element_test = _compile_test(condition, groups)
        return lambda v: isinstance(v, _ARRAY) and any(element_test(x) for x in v if x is not None)
    element_cond = _compile_condition(condition, groups)
    return lambda v: (
        isinstance(v, _ARRAY) and any(element_cond(_as_object(x)) for x in v if x is not None)
    )


def _as_object(value: Any) -> Mapping[str, Any]:
    """An element seen as an attributes mapping, so field lookups follow :func:`get_path`."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, _ARRAY):
        view: dict[str, Any] = {str(i): x for i, x in enumerate(value)}
        view["length"] = len(value)
        return view
    return _EMPTY
