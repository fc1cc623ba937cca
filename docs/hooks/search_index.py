"""A mkdocs hook: the site's search index, written as a script so search works from disk too.

The theme's own search loads ``search_index.json`` from a web worker; browsers refuse both the
worker and the fetch when the site is opened as files (``file://``). This hook splits every
page's HTML into its sections (one per ``h1``-``h3`` heading), keeps their plain text, and writes
them to ``search/search_index.js`` as ``window.elefastSearchIndex = [...]``. ``js/search.js``
loads that file with a ``<script>`` tag, which works over ``file://`` and ``http(s)://`` alike.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

#: Where the index is written, relative to the built site (js/search.js reads it from there).
INDEX_PATH = "search/search_index.js"

_SECTION_TAGS = {"h1", "h2", "h3"}
_SKIPPED_TAGS = {"script", "style"}
_sections: List[Dict[str, str]] = []


class _Sections(HTMLParser):
    """Splits a page's HTML into (heading id, heading text, body text) at each h1-h3."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: List[Tuple[str, List[str], List[str]]] = [("", [], [])]
        self._in_heading = False
        self._skip_depth = 0
        self._skip_stack: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        values = dict(attrs)
        if self._skip_depth:
            if tag in _SKIPPED_TAGS or tag == "a":
                self._skip_stack.append(tag)
                self._skip_depth += 1
            return
        if tag in _SKIPPED_TAGS or (tag == "a" and "headerlink" in (values.get("class") or "").split()):
            self._skip_stack.append(tag)
            self._skip_depth = 1
        elif tag in _SECTION_TAGS:
            anchor = values.get("id") or ""
            if "doc-heading" in (values.get("class") or "").split() and anchor:
                # the API reference (mkdocstrings): the dotted path says whose method it is
                self.found.append((anchor, [anchor], []))
                self._skip_stack.append(tag)
                self._skip_depth = 1
                return
            self.found.append((anchor, [], []))
            self._in_heading = True
        elif tag in {"p", "li", "pre", "td", "th", "dt", "dd", "br", "div"}:
            self.found[-1][2].append(" ")

    def handle_endtag(self, tag: str) -> None:
        if self._skip_depth:
            if self._skip_stack and self._skip_stack[-1] == tag:
                self._skip_stack.pop()
                self._skip_depth -= 1
            return
        if tag in _SECTION_TAGS:
            self._in_heading = False

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        _anchor, title, text = self.found[-1]
        (title if self._in_heading else text).append(data)


def _clean(parts: List[str]) -> str:
    return re.sub(r"\s+", " ", "".join(parts)).strip()


def on_pre_build(config: Any) -> None:
    """Start a fresh index (``mkdocs serve`` builds more than once per process)."""
    _sections.clear()


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """Record the sections of one page; the page's HTML is returned unchanged."""
    parser = _Sections()
    parser.feed(html)
    parser.close()
    url: str = page.url or "index.html"
    for position, (anchor, title_parts, text_parts) in enumerate(parser.found):
        title, text = _clean(title_parts), _clean(text_parts)
        if not title and not text:
            continue
        first = position <= 1  # the text before the first heading, or the page's h1
        _sections.append({
            "page": str(page.title or ""),
            "title": title or str(page.title or ""),
            "location": url if first or not anchor else f"{url}#{anchor}",
            "text": text,
        })
    return html


def on_post_build(config: Any) -> None:
    """Write the index as a script into the built site."""
    target = Path(config["site_dir"]) / INDEX_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(_sections, ensure_ascii=True, separators=(",", ":"))
    target.write_text(f"window.elefastSearchIndex = {payload};\n", encoding="utf-8")
