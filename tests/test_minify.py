"""The serve-time minifier: what it removes, and what it must copy unchanged."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from trimtab.minify import MinifyError, minify_js

TRACKER = Path(__file__).resolve().parents[1] / "tracker" / "trimtab.js"


@pytest.mark.parametrize(
    ("source", "minified"),
    [
        ("  const a = 1; // one\n\n\n  let b = 2;\n", "const a=1;\nlet b=2;\n"),
        ("/* head */\nf( a , b ) ;\n", "f(a,b);\n"),
        ("x = 'a  // not a comment';", "x='a  // not a comment';\n"),
        ('x = "/* kept */  ";', 'x="/* kept */  ";\n'),
        ("x = 'it\\'s // here';", "x='it\\'s // here';\n"),
        ("re = /\\/\\*x[/]/g; y = 1;", "re=/\\/\\*x[/]/g;y=1;\n"),
        ("if (/^ $/.test(k)) go();", "if(/^ $/.test(k))go();\n"),
        ("return /a b/.test(s);", "return/a b/.test(s);\n"),
        ("h = a / 2 / b; // half", "h=a/2/b;\n"),
        ("n = a + +b - -c;", "n=a+ +b- -c;\n"),
        ("t = `a  ${ b ? `x  ${c}` : '}' }  // z`;", "t=`a  ${b?`x  ${c}`:'}'}  // z`;\n"),
        ("t = `line one\n    indented line`;", "t=`line one\n    indented line`;\n"),
        ("const o = { a: 1 }; /* x */ let q = typeof o;", "const o={a:1};let q=typeof o;\n"),
        ("a\n++b", "a\n++b\n"),  # line breaks kept: automatic semicolons stay where they were
    ],
)
def test_minify(source: str, minified: str) -> None:
    assert minify_js(source) == minified


@pytest.mark.parametrize("broken", ["x = 'open", "/* never closed", "t = `open ${a}", "r = /open"])
def test_unterminated_input_is_refused(broken: str) -> None:
    with pytest.raises(MinifyError):
        minify_js(broken)


def test_minifying_twice_changes_nothing_more() -> None:
    once = minify_js(TRACKER.read_text(encoding="utf-8"))
    assert minify_js(once) == once


def test_the_tracker_minified_keeps_every_string_and_regex() -> None:
    """Every quoted string of the source is in the output verbatim, and node parses it."""
    source = TRACKER.read_text(encoding="utf-8")
    out = minify_js(source)
    for comment in ("consent-first behaviour tracker", "// -- events, transport", "sent just past"):
        assert comment in source and comment not in out
    kept = ("'.tt-hide [data-tt-slot]{visibility:hidden}'", "/Page|Home|End|^ $/", "/\\/$/")
    for literal in kept:
        assert literal in source and literal in out
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    checked = subprocess.run([node, "--check"], input=out, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
