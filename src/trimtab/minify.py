"""A small serve-time minifier for our own browser script (``tracker/trimtab.js``).

The source stays readable (comments, indentation); ``/t.js`` serves it without them. This is
deliberately not a general JavaScript minifier: it removes comments, leading indentation and
blank lines, and the spaces between tokens that need none (``a = b`` → ``a=b``), and nothing
else. Line breaks are kept, so automatic semicolon insertion sees the same program. Strings,
template literals (with ``${…}`` nesting) and regular-expression literals are copied unchanged.

>>> print(minify_js("const a = 1; // one\\n\\n  /* two */ s = 'a  // b' + `${a}  //`;"), end="")
const a=1;
s='a  // b'+`${a}  //`;
"""

from __future__ import annotations

# After one of these characters (or at the start) a "/" begins a regular expression, not a
# division. Keywords that can precede a regex are checked separately.
_REGEX_AFTER = set("(,=:[!&|?{};+-*%<>~^")
_REGEX_KEYWORDS = ("return", "typeof", "case", "do", "else", "in", "of", "void", "yield", "await")


class MinifyError(ValueError):
    """The source ended inside a string, comment, template or regular expression."""


def minify_js(source: str) -> str:
    """The script without comments, indentation, blank lines and needless spaces."""
    out: list[str] = []
    i, n = 0, len(source)
    # template-literal nesting: each entry is the brace depth at which a ``${`` was opened
    templates: list[int] = []
    depth = 0
    pending_space = False

    def last_significant() -> str:
        for chunk in reversed(out):
            stripped = chunk.rstrip(" \n")
            if stripped:
                return stripped
        return ""

    def emit(text: str) -> None:
        nonlocal pending_space
        if pending_space and out and _needs_space(out[-1][-1], text[0]):
            out.append(" ")
        pending_space = False
        out.append(text)

    def regex_allowed() -> bool:
        before = last_significant()
        if not before:
            return True
        if before[-1] in _REGEX_AFTER:
            return True
        word = before.rstrip()
        return any(
            word.endswith(k) and (len(word) == len(k) or not _ident(word[-len(k) - 1]))
            for k in _REGEX_KEYWORDS
        )

    def read_template(start: int) -> int:
        """Copy template text from ``start`` (a backtick or the ``}`` ending a ``${``) up to
        the next ``${`` or the closing backtick; the index after what was copied."""
        j = start + 1
        while j < n:
            c = source[j]
            if c == "\\":
                j += 2
                continue
            if c == "`":
                emit(source[start : j + 1])
                return j + 1
            if c == "$" and source.startswith("${", j):
                emit(source[start : j + 2])
                templates.append(depth)
                return j + 2
            j += 1
        raise MinifyError("unterminated template literal")

    while i < n:
        c = source[i]
        if c == "\n":
            while out and out[-1] == " ":
                out.pop()
            if out and not out[-1].endswith("\n"):
                out.append("\n")
            pending_space = False
            i += 1
        elif c in " \t\r":
            if out and not out[-1].endswith("\n"):
                pending_space = True
            i += 1
        elif source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end == -1 else end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end == -1:
                raise MinifyError("unterminated comment")
            i = end + 2
            pending_space = bool(out) and not out[-1].endswith("\n")
        elif c in "'\"":
            j = i + 1
            while j < n and source[j] != c:
                if source[j] == "\n":
                    raise MinifyError("unterminated string")
                j += 2 if source[j] == "\\" else 1
            if j >= n:
                raise MinifyError("unterminated string")
            emit(source[i : j + 1])
            i = j + 1
        elif c == "`":
            i = read_template(i)
        elif c == "/" and regex_allowed():
            j, in_class = i + 1, False
            while j < n:
                d = source[j]
                if d == "\\":
                    j += 2
                    continue
                if d == "\n":
                    raise MinifyError("unterminated regular expression")
                if d == "[":
                    in_class = True
                elif d == "]":
                    in_class = False
                elif d == "/" and not in_class:
                    break
                j += 1
            if j >= n:
                raise MinifyError("unterminated regular expression")
            j += 1
            while j < n and _ident(source[j]):  # flags
                j += 1
            emit(source[i:j])
            i = j
        elif c == "{":
            depth += 1
            emit(c)
            i += 1
        elif c == "}":
            if templates and templates[-1] == depth:
                templates.pop()
                i = read_template(i)
            else:
                depth -= 1
                emit(c)
                i += 1
        else:
            j = i + 1
            while j < n and source[j] not in " \t\r\n/'\"`{}" and (source[j] != "/"):
                j += 1
            emit(source[i:j])
            i = j
    text = "".join(out).strip()
    return text + "\n" if text else ""


def _needs_space(before: str, after: str) -> bool:
    """Whether two tokens would run together (``a b``, ``a + +b``, ``1 .x``) without a space."""
    if before == "\n":
        return False
    if _ident(before) and _ident(after):
        return True
    return (before in "+-" and after in "+-") or (before.isdigit() and after == ".")


def _ident(c: str) -> bool:
    return c.isalnum() or c in "_$"
