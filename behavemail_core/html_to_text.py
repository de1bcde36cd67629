"""Plain-text parts generated from HTML email bodies.

Built on the standard library's ``html.parser`` so the product needs no GPL
converter. The output keeps paragraphs, line breaks, list items (numbered for
``<ol>``), table rows and link URLs, and drops scripts, styles, the document
head and images.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "main", "nav", "p", "section", "table", "tbody", "tfoot", "thead",
})
_SKIPPED_TAGS = frozenset({"head", "noscript", "script", "style", "template", "title"})
_CELL_TAGS = frozenset({"td", "th"})
_LIST_TAGS = frozenset({"ol", "ul"})
# A paragraph break: at most one blank line survives the final clean-up.
_PARAGRAPH = "\n\n"


def html_to_text(html: str) -> str:
    """Convert an HTML email body to readable plain text."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return _tidy(parser.text())


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        # One entry per open <ol>/<ul>: the next item number, or None for <ul>.
        self._lists: list[int | None] = []
        # One entry per open <a>: its href and where its text starts in _chunks.
        self._links: list[tuple[str, int]] = []

    def text(self) -> str:
        return "".join(self._chunks)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        elif self._skip_depth:
            return
        elif tag in _BLOCK_TAGS:
            self._chunks.append(_PARAGRAPH)
        elif tag == "br":
            self._chunks.append("\n")
        elif tag == "hr":
            self._chunks.append(_PARAGRAPH + "----" + _PARAGRAPH)
        elif tag == "pre":
            self._pre_depth += 1
            self._chunks.append(_PARAGRAPH)
        elif tag in _LIST_TAGS:
            self._lists.append(1 if tag == "ol" else None)
            self._chunks.append(_PARAGRAPH)
        elif tag == "li":
            self._chunks.append("\n" + self._next_list_marker())
        elif tag == "tr":
            self._chunks.append("\n")
        elif tag in _CELL_TAGS and not self._at_line_start():
            self._chunks.append(" ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self._chunks)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/> and <hr/> carry no content, and a self-closed skipped tag opens nothing.
        if tag not in _SKIPPED_TAGS:
            self.handle_starttag(tag, attrs)
            if tag in _LIST_TAGS or tag in ("pre", "a"):
                self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif self._skip_depth:
            return
        elif tag in _BLOCK_TAGS:
            self._chunks.append(_PARAGRAPH)
        elif tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
            self._chunks.append(_PARAGRAPH)
        elif tag in _LIST_TAGS:
            if self._lists:
                self._lists.pop()
            self._chunks.append(_PARAGRAPH)
        elif tag == "a" and self._links:
            self._close_link(*self._links.pop())

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            self._chunks.append(data)
            return
        collapsed = re.sub(r"[ \t\n\r\f]+", " ", data)
        if self._at_line_start() or self._last_character() == " ":
            collapsed = collapsed.lstrip(" ")
        self._chunks.append(collapsed)

    def _last_character(self) -> str:
        for chunk in reversed(self._chunks):
            if chunk:
                return chunk[-1]
        return "\n"

    def _at_line_start(self) -> bool:
        return self._last_character() == "\n"

    def _next_list_marker(self) -> str:
        if not self._lists or self._lists[-1] is None:
            return "- "
        number = self._lists[-1]
        self._lists[-1] = number + 1
        return f"{number}. "

    def _close_link(self, href: str, start: int) -> None:
        """Append the link's URL after its text, unless the text already is the URL."""
        href = href.strip()
        if not href or href.startswith("#") or href.lower().startswith("javascript:"):
            return
        link_text = "".join(self._chunks[start:]).strip()
        shown_target = href.removeprefix("mailto:")
        if link_text in (href, shown_target):
            return
        if link_text:
            self._chunks.append(f" ({shown_target})")
        else:
            self._chunks.append(shown_target)


def _tidy(text: str) -> str:
    """Strip spaces at line ends and keep at most one blank line between paragraphs."""
    lines = [line.rstrip(" \t") for line in text.split("\n")]
    joined = "\n".join(lines)
    joined = re.sub(r"\n{3,}", "\n\n", joined)
    return joined.strip("\n") + "\n"
