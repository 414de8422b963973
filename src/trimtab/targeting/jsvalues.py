"""JavaScript value semantics that GrowthBook targeting depends on.

GrowthBook's reference SDK is JavaScript, and its conformance suite pins a few JavaScript
behaviours: ordering operators coerce like JS ``<`` (a missing attribute is ``null``, which
compares as ``0``; ``8 > "5"`` is true), hash values are formatted with JS ``String()``, and
string order is by UTF-16 code unit. This module implements exactly those pieces on plain
JSON-like Python values (``None``, ``bool``, ``int``, ``float``, ``str``, lists, mappings).

>>> js_compare(None, -10), js_compare(8, "10"), js_compare("8", "10")
(1, -1, 1)
>>> js_number_to_string(1e21), js_number_to_string(2.50), js_number_to_string(-0.0000001)
('1e+21', '2.5', '-1e-7')
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "deep_equal",
    "is_array",
    "is_number",
    "js_compare",
    "js_number_to_string",
    "js_to_number",
    "js_to_string",
    "js_truthy",
    "json_type",
    "strict_equal",
]

# JS StrWhiteSpaceChar: WhiteSpace and LineTerminator code points.
_JS_WHITESPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
_JS_WHITESPACE += "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_DECIMAL = re.compile(r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\Z")
_RADIX = re.compile(r"0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)\Z")


def is_number(value: Any) -> bool:
    """A JSON number: ``int`` or ``float`` but never ``bool`` (a Python ``int`` subclass)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_array(value: Any) -> bool:
    """A JSON array; tuples count so attribute producers may use them."""
    return isinstance(value, (list, tuple))


def json_type(value: Any) -> str:
    """The GrowthBook ``$type`` name of a value: null, boolean, number, string, array, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "unknown"


def js_truthy(value: Any) -> bool:
    """JS truthiness: ``0``, ``NaN``, ``""``, ``false`` and ``null`` are false; ``[]`` and ``{}``
    are true."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)):
        return value == value and value != 0
    if isinstance(value, str):
        return value != ""
    return True


def js_number_to_string(value: float) -> str:
    """Format a number like JS ``String(number)`` (ECMAScript Number::toString, radix 10)."""
    if isinstance(value, int) and not isinstance(value, bool) and -(2**53) < value < 2**53:
        return str(value)
    try:
        x = float(value)
    except OverflowError:
        x = math.inf if value > 0 else -math.inf
    if x != x:
        return "NaN"
    if x == 0:
        return "0"
    if x < 0:
        return "-" + js_number_to_string(-x)
    if x == math.inf:
        return "Infinity"
    # repr gives the shortest round-tripping digits; rewrite them as x = 0.DIGITS * 10**n.
    mantissa, _, exponent = repr(x).partition("e")
    whole, _, fraction = mantissa.partition(".")
    significant = (whole + fraction).lstrip("0")
    digits = significant.rstrip("0")
    n = len(significant) - len(fraction) + int(exponent or "0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{'+' if n > 0 else '-'}{abs(n - 1)}"


def js_to_string(value: Any) -> str:
    """JS ``String(value)`` for JSON-like values (arrays join their elements with commas)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return js_number_to_string(value)
    if isinstance(value, (list, tuple)):
        return ",".join("" if v is None else js_to_string(v) for v in value)
    return "[object Object]"


def js_to_number(value: Any) -> float:
    """JS ``Number(value)``: ``null`` is 0, booleans 0/1, strings parsed strictly, else NaN."""
    if value is None or value is False:
        return 0.0
    if value is True:
        return 1.0
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, (list, tuple, Mapping)):
        return js_to_number(js_to_string(value))
    if not isinstance(value, str):
        return math.nan
    text = value.strip(_JS_WHITESPACE)
    if not text:
        return 0.0
    if _DECIMAL.match(text):
        return float(text)
    if _RADIX.match(text):
        return float(int(text, 0))
    return math.nan


def _utf16_order(a: str, b: str) -> int:
    if a.isascii() and b.isascii():
        return (a > b) - (a < b)
    # Astral characters are surrogate pairs in UTF-16 and sort below U+E000..U+FFFF there.
    ua = a.encode("utf-16-be", "surrogatepass")
    ub = b.encode("utf-16-be", "surrogatepass")
    return (ua > ub) - (ua < ub)


def js_compare(a: Any, b: Any) -> int | None:
    """Order two values as JS relational operators do: -1, 0 or 1, or None when unordered (NaN).

    Arrays and objects are first turned into strings (JS ToPrimitive); two strings compare by
    UTF-16 code unit; anything else compares as numbers.
    """
    if is_number(a) and is_number(b):
        if a != a or b != b:
            return None
        return int(a > b) - int(a < b)
    if isinstance(a, (list, tuple, Mapping)):
        a = js_to_string(a)
    if isinstance(b, (list, tuple, Mapping)):
        b = js_to_string(b)
    if isinstance(a, str) and isinstance(b, str):
        return _utf16_order(a, b)
    x, y = js_to_number(a), js_to_number(b)
    if x != x or y != y:
        return None
    return (x > y) - (x < y)


def strict_equal(a: Any, b: Any) -> bool:
    """JS ``===`` between two decoded JSON values: same type and equal; containers never are
    (they would be different references)."""
    if a is None or b is None:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, str):
        return isinstance(b, str) and a == b
    if isinstance(a, (int, float)):
        return isinstance(b, (int, float)) and a == b
    return False


def _js_key_order(obj: Mapping[Any, Any]) -> list[Any]:
    # JS own-property order: array-index keys ascending, then the rest in insertion order.
    index_keys = [k for k in obj if isinstance(k, str) and k.isdecimal() and k.isascii()]
    index_keys = [k for k in index_keys if k == "0" or not k.startswith("0")]
    rest = [k for k in obj if k not in index_keys]
    return sorted(index_keys, key=int) + rest


def deep_equal(a: Any, b: Any) -> bool:
    """Literal equality of a condition value and an attribute, as GrowthBook's
    ``JSON.stringify(a) === JSON.stringify(b)``: types must match at every level (``true`` is
    never ``1``), objects compare with their keys in JS property order."""
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return False
        return all(deep_equal(_json_value(x), _json_value(y)) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping):
        if not isinstance(b, Mapping) or _js_key_order(a) != _js_key_order(b):
            return False
        return all(deep_equal(_json_value(a[k]), _json_value(b[k])) for k in a)
    if isinstance(b, (list, tuple, Mapping)):
        return False
    return strict_equal(a, b)


def _json_value(value: Any) -> Any:
    # JSON.stringify writes NaN and the infinities as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
