# -*- test-case-name: tests.mime.test_html -*-
"""
HTML to plain text, for the preview of HTML-only messages and for
full-text search (which also takes the alt and title attributes).  The
stdlib parser is forgiving of the broken markup mail is full of; we only
need the words and where the paragraphs break, not a faithful rendering.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text"]

#: Elements whose content is not text a reader sees.
_HIDDEN = frozenset(["script", "style", "head", "title", "template", "noscript", "svg"])

#: Elements that start and end a line.
_BLOCK = frozenset(
    """
    address article aside blockquote body br dd details div dl dt fieldset
    figcaption figure footer form h1 h2 h3 h4 h5 h6 header hr html li main nav
    ol p pre section summary table tbody thead tfoot tr ul
    """.split()
)

#: Elements after which a cell boundary should leave a space.
_CELL = frozenset(["td", "th"])

#: Void elements: they have no end tag, so they never open a hidden section.
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())

#: Attributes whose values are shown to the reader (an image's alternative
#: text, a tooltip): RFC 8621 section 4.4.1 asks search to consider them.
_PRESENTED = ("alt", "title")


_PRE_SPACE = "\ue000"
_PRE_TAB = "\ue001"


#: The ends the stdlib's markup base searches for (C{_markupbase}'s
#: C{_commentclose}, C{_markedsectionclose}, C{_msmarkedsectionclose}).
_COMMENT_CLOSE = re.compile(r"--\s*>")
_MARKED_SECTION_CLOSE = re.compile(r"]\s*]\s*>")
_MS_MARKED_SECTION_CLOSE = re.compile(r"]\s*>")


class _TextExtractor(HTMLParser):
    def __init__(self, attributes: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.attributes = attributes
        #: Per end pattern, (buffer, offset) from which it is known not to
        #: occur in that buffer: see L{_never_closes}.
        self._unclosed: dict[re.Pattern[str], tuple[str, int]] = {}

    def _never_closes(self, pattern: re.Pattern[str], start: int) -> bool:
        """
        Whether C{pattern} is known not to occur at or after C{start} in
        the buffer.  The stdlib searches to the end of the document for
        the end of every comment or marked section, and reads one that has
        none as text up to the next C{>}: 100 KB of C{<!--x>} took 7
        seconds.  A search that failed from one offset fails from every
        later one, so it is done once.
        """
        known = self._unclosed.get(pattern)
        return known is not None and known[0] is self.rawdata and start >= known[1]

    def parse_comment(self, i: int, report: bool = True) -> int:
        if self._never_closes(_COMMENT_CLOSE, i + 4):
            return -1
        end = super().parse_comment(i, report)
        if end < 0:
            self._unclosed[_COMMENT_CLOSE] = (self.rawdata, i + 4)
        return end

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        name, j = self._scan_name(i + 3, i)  # type: ignore[attr-defined]
        if j < 0:
            return j
        if name in {"temp", "cdata", "ignore", "include", "rcdata"}:
            close = _MARKED_SECTION_CLOSE
        elif name in {"if", "else", "endif"}:
            close = _MS_MARKED_SECTION_CLOSE
        else:
            return super().parse_marked_section(i, report)
        if self._never_closes(close, i + 3):
            return -1
        end: int = super().parse_marked_section(i, report)
        if end < 0:
            self._unclosed[close] = (self.rawdata, i + 3)
        return end

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _HIDDEN and tag not in _VOID:
            self.hidden += 1
        elif tag in _BLOCK:
            self.chunks.append("\n")
            if tag == "pre":
                self.pre += 1
        elif tag in _CELL:
            self.chunks.append(" ")
        self._presented(attrs)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in _BLOCK:
            self.chunks.append("\n")
        self._presented(attrs)

    def _presented(self, attrs: list) -> None:
        if not self.attributes or self.hidden:
            return
        for name, value in attrs:
            if name in _PRESENTED and value and value.strip():
                self.chunks.append(" " + re.sub(r"\s+", " ", value) + " ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCK:
            self.chunks.append("\n")
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
        elif tag in _CELL:
            self.chunks.append(" ")

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.pre:
            # Protected from the white space clean-up in html_to_text.
            self.chunks.append(data.replace("\r\n", "\n").replace(" ", _PRE_SPACE).replace("\t", _PRE_TAB))
        else:
            self.chunks.append(re.sub(r"\s+", " ", data))


def _unclosable_as_text(html: str) -> str:
    """
    C{html} with every C{<} that cannot open a complete construct written
    C{&lt;}: those after the last C{>}, which every tag, declaration and
    processing instruction ends with.  The stdlib parser reads them as
    text anyway, but only after scanning to the end of the document for
    each one: 100 KB of C{<a} took 29 seconds, of C{<!--} 16.  The
    common document, which ends with C{>}, is returned as it is after one
    C{rfind}.
    """
    last_close = html.rfind(">")
    if last_close < len(html) - 1 and "<" in html[last_close + 1 :]:
        html = html[: last_close + 1] + html[last_close + 1 :].replace("<", "&lt;")
    return html


def html_to_text(html: str, attributes: bool = False) -> str:
    """
    The text of an HTML document: script, style and head content dropped,
    block elements on lines of their own, character references decoded,
    runs of white space (non-breaking spaces too) collapsed except in
    C{pre}, blank lines dropped.  Never raises on malformed markup.

    With C{attributes} (for search), the C{alt} and C{title} attributes
    of the elements that are shown are text too, where the element is:
    they are presented to the user, other attributes are markup.
    """
    parser = _TextExtractor(attributes)
    try:
        parser.feed(_unclosable_as_text(html))
        parser.close()
    except Exception:  # noqa: BLE001 - the parser's internal asserts on odd markup
        pass
    text = re.sub(r"[ \t]+", " ", "".join(parser.chunks))
    lines = [line.strip(" ") for line in text.split("\n")]
    text = "\n".join(line for line in lines if line)
    return text.replace(_PRE_SPACE, " ").replace(_PRE_TAB, "\t")
