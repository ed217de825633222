"""Indico descriptions (Markdown or HTML, or both) as booklet paragraphs of styled runs.

Indico stores a description as Markdown or as HTML; pasted abstracts mix them. Both become
one Markdown text: HTML goes through the standard library's HTMLParser, which keeps a
sanitized subset (paragraphs, line breaks, bold, italic, lists, links, headings) as Markdown
and drops every other tag, and the content of script and style. markdown-it-py (CommonMark,
raw HTML off, a newline is a line break as in Indico) then parses the Markdown; its tokens
become blocks of runs. No tag and no Markdown marker survives as text, only what they mark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from markdown_it import MarkdownIt

# A run of text: (text, text style or None, link target or None); "\n" is a line break.
Run = tuple[str, str | None, str | None]
LINE_BREAK: Run = ("\n", None, None)


@dataclass(frozen=True)
class Block:
    kind: str  # "p" a paragraph, "h" a heading inside the abstract, "li" a list item
    runs: tuple[Run, ...]
    marker: str = ""  # a list item's bullet or number ("• ", "2. "); "" on its later paragraphs


# Anything that may be markup; text without any of it is one plain paragraph (most abstracts),
# and needs no parser.
_MAYBE_MARKUP = re.compile(r"[<&*_#\[`\\\n]|^\s*(?:[-+>=]|\d+[.)])(?:\s|$)")
_TAG = re.compile(r"<[A-Za-z!/]")
_SAFE_LINK = re.compile(r"(?:https?|mailto|ftp):", re.IGNORECASE)

_PARSER = MarkdownIt("commonmark", {"html": False, "breaks": True})


def blocks(description: str) -> list[Block]:
    """The paragraphs of a description, its markup turned into styles."""
    text = description.strip()
    if not text:
        return []
    if not _MAYBE_MARKUP.search(text):
        return [Block("p", ((text, None, None),))]
    if _TAG.search(text):
        text = html_to_markdown(text)
    return _from_tokens(_PARSER.parse(text))


# --- HTML -> Markdown ------------------------------------------------------------------------

_DROPPED = frozenset({"script", "style", "head", "title", "noscript", "template", "iframe",
                      "object", "svg", "math"})
_BLOCKS = frozenset({"p", "div", "section", "article", "blockquote", "pre", "table", "tr",
                     "hr", "dl", "dt", "dd", "center", "address", "figure", "figcaption"})
_MARKS = {"b": "**", "strong": "**", "i": "*", "em": "*", "cite": "*", "var": "*"}


class _HtmlToMarkdown(HTMLParser):
    """Keeps the sanitized subset as Markdown; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.dropping = 0
        self.lists: list[int | None] = []  # None: bullets; a number: the next item's number
        self.pending: list[str] = []  # marks opened with no text yet (written before the text)
        self.open: list[str] = []  # marks written and not yet closed
        self.links: list[str] = []  # each open <a>'s target; "" when not written as a link

    def _break_block(self, text: str = "\n\n") -> None:
        self._close_marks()
        while self.out and not self.out[-1].strip():  # source indentation between blocks
            self.out.pop()
        self.out.append(text)

    def _close_marks(self) -> None:
        self.pending.clear()
        while self.open:
            self._write_close(self.open.pop())

    def _write_close(self, mark: str) -> None:
        # `**bold **` is not bold in Markdown: the closing mark goes before trailing spaces.
        tail = ""
        while self.out and not self.out[-1].strip():
            tail = self.out.pop() + tail
        if self.out:
            last = self.out[-1]
            stripped = last.rstrip()
            tail = last[len(stripped):] + tail
            self.out[-1] = stripped
        self.out.append(mark + tail)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self.dropping += 1
        elif self.dropping:
            return
        elif tag == "br":
            self.out.append("\n")
        elif tag in _BLOCKS:
            self._break_block()
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self._break_block("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in ("ul", "ol"):
            self._break_block()
            self.lists.append(None if tag == "ul" else 1)
        elif tag == "li":
            marker = "- "
            if self.lists and self.lists[-1] is not None:
                marker = f"{self.lists[-1]}. "
                self.lists[-1] += 1
            self._break_block("\n" + marker)
        elif tag in _MARKS:
            self.pending.append(_MARKS[tag])
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            href = href.strip()
            safe = bool(_SAFE_LINK.match(href)) and not re.search(r"[\s<>()]", href)
            self.links.append(href if safe else "")
            if safe:
                self.out.append("[")
        elif tag in ("td", "th"):
            self.out.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" and not self.dropping:
            self.out.append("\n")
        elif tag not in _DROPPED:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED:
            self.dropping = max(0, self.dropping - 1)
        elif self.dropping:
            return
        elif tag in _BLOCKS or (len(tag) == 2 and tag[0] == "h" and tag[1] in "123456"):
            self._break_block()
        elif tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self._break_block()
        elif tag in _MARKS:
            mark = _MARKS[tag]
            if mark in self.pending:
                self.pending.remove(mark)  # nothing inside: no mark at all
            elif mark in self.open:
                while self.open:
                    last = self.open.pop()
                    self._write_close(last)
                    if last == mark:
                        break
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href:
                for mark in reversed(self.open):  # a mark cannot straddle the link's end
                    self._write_close(mark)
                self.open.clear()
                self.out.append(f"]({href})")

    def handle_data(self, data: str) -> None:
        if self.dropping or not data:
            return
        text = re.sub(r"[ \t\r\f\v]+", " ", data)
        if self.pending and text.strip():
            lead = text[:len(text) - len(text.lstrip())]
            self.out.append(lead + "".join(self.pending))
            self.open.extend(self.pending)
            self.pending.clear()
            text = text.lstrip()
        self.out.append(text)


def html_to_markdown(html: str) -> str:
    parser = _HtmlToMarkdown()
    parser.feed(html)
    parser.close()
    parser._close_marks()
    # Indentation in HTML source means nothing; in Markdown it would make a code block.
    lines = [re.sub(" {2,}", " ", line.strip()) for line in "".join(parser.out).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- Markdown tokens -> blocks ---------------------------------------------------------------

def _style(bold: int, italic: int) -> str | None:
    if bold and italic:
        return "Strong Emphasis"
    if bold:
        return "Strong"
    return "Emphasis" if italic else None


def _inline(children: list) -> tuple[Run, ...]:
    runs: list[Run] = []
    bold = italic = 0
    href: str | None = None
    for token in children:
        kind = token.type
        if kind in ("text", "code_inline"):
            if token.content:
                runs.append((token.content, _style(bold, italic), href))
        elif kind in ("softbreak", "hardbreak"):
            runs.append(LINE_BREAK)
        elif kind == "strong_open":
            bold += 1
        elif kind == "strong_close":
            bold = max(0, bold - 1)
        elif kind == "em_open":
            italic += 1
        elif kind == "em_close":
            italic = max(0, italic - 1)
        elif kind == "link_open":
            target = str(token.attrGet("href") or "")
            href = target if _SAFE_LINK.match(target) else None
        elif kind == "link_close":
            href = None
        elif kind == "image":
            alt = "".join(c.content for c in token.children or [])
            if alt:
                runs.append((alt, _style(bold, italic), href))
    merged: list[Run] = []
    for run in runs:  # fewer, longer runs: the renderer's cost is per run
        if merged and run != LINE_BREAK and merged[-1] != LINE_BREAK and \
                merged[-1][1:] == run[1:]:
            merged[-1] = (merged[-1][0] + run[0], run[1], run[2])
        else:
            merged.append(run)
    while merged and merged[-1] == LINE_BREAK:
        merged.pop()
    return tuple(merged)


def _from_tokens(tokens: list) -> list[Block]:
    found: list[Block] = []
    lists: list[int | None] = []
    marker = ""
    heading = False
    for token in tokens:
        kind = token.type
        if kind == "bullet_list_open":
            lists.append(None)
        elif kind == "ordered_list_open":
            lists.append(int(token.attrGet("start") or 1))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            if lists:
                lists.pop()
        elif kind == "list_item_open":
            if lists and lists[-1] is not None:
                marker = f"{lists[-1]}. "
                lists[-1] += 1
            else:
                marker = "• "
        elif kind == "heading_open":
            heading = True
        elif kind == "heading_close":
            heading = False
        elif kind == "inline":
            runs = _inline(token.children or [])
            if runs:
                kind_of = "h" if heading else "li" if lists else "p"
                found.append(Block(kind_of, runs, marker if lists else ""))
                marker = ""
        elif kind in ("code_block", "fence"):
            lines = token.content.rstrip("\n").split("\n")
            runs_list: list[Run] = []
            for n, line in enumerate(lines):
                if n:
                    runs_list.append(LINE_BREAK)
                if line:
                    runs_list.append((line, None, None))
            if runs_list:
                found.append(Block("li" if lists else "p", tuple(runs_list), marker))
                marker = ""
    return found
