"""``_text.markdown_text``: data-derived text in markdown renders as exactly that text, never as markup.

Checked with a CommonMark renderer (markdown-it-py, with GFM tables and strikethrough): the
rendered HTML holds no element the text did not ask for, and its text is the original.
"""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from alliance_fhir._text import markdown_text

RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough"])

HOSTILE = [
    "[x](http://e)",
    "![x](http://e/p.png)",
    '<img src=x onerror="alert(1)">',
    "<script>alert(1)</script>",
    "<http://e>",
    "<a@b.example>",
    "http://e.example/x",
    "www.e.example",
    "&amp; &#60; &lt;script&gt; &copy;",
    "back\\slash \\* \\\\",
    "**bold** __b__ *i* _i_ `code` ``x``",
    "# heading",
    "- item",
    "+ item",
    "1. item",
    "1) item",
    "> quote",
    "| a | b |",
    "~~strike~~",
    "a\nb\n\n# h\n---\n```\ncode",
    "line end two spaces  \nnext",
    "trailing backslash\\",
    "[ref]: http://e",
    "x [link][ref] y",
    "{{template}} $x$ %s",
    "Dr. <b>Smith</b> & co.",
    "=====",
]


def rendered_text(markdown: str) -> str:
    out = RENDERER.render(markdown)
    return html.unescape(re.sub(r"</?p>\n?", "", out)).strip()


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_text_renders_as_itself(value):
    escaped = markdown_text(value)
    out = RENDERER.render(escaped)
    # one paragraph of text: no link, image, HTML, heading, list, quote, code, table or emphasis
    assert re.fullmatch(r"<p>[^<>]*</p>\n", out), out
    assert rendered_text(escaped) == " ".join(value.split())
    assert "://" not in escaped  # a bare URL cannot be picked up by a GFM autolinker


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_text_inside_a_table_cell_stays_in_its_cell(value):
    table = f"| a | b |\n|---|---|\n| {markdown_text(value)} | z |\n"
    out = RENDERER.render(table)
    assert out.count("<td>") == 2 and "<a " not in out and "<img" not in out and "<script" not in out


def test_control_characters_and_length():
    assert markdown_text("a\x1b[31mb\u202ec") == "a \\[31mb c"
    assert markdown_text("x" * 500, limit=10) == "x" * 9 + "…"
    assert markdown_text("   ") == ""
