"""The documentation site, built as ``make docs`` builds it, works opened as files (``file://``).

Every internal link (``href``/``src``) of every built page must name a file that exists (a
directory URL opens a directory listing from disk), every ``#anchor`` must exist in the page it
points at, search must not need a web server, and the index page must say how to install.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Set, Tuple
from urllib.parse import unquote, urlsplit

from tests import support

DOCS = support.ROOT / "docs"
HAVE_MKDOCS = all(importlib.util.find_spec(name) is not None for name in ("mkdocs", "material", "mkdocstrings"))
WHY_SKIPPED = "mkdocs, mkdocs-material or mkdocstrings is not installed (pip install -e '.[docs]')"
#: Link attributes walked; ``srcset`` holds a list and is not used by the site.
LINK_ATTRIBUTES = ("href", "src")


class _Page(HTMLParser):
    """The links and the anchor targets (``id``, ``<a name>``) of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: List[Tuple[str, str]] = []
        self.anchors: Set[str] = set()

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in LINK_ATTRIBUTES:
                self.links.append((tag, value))
            elif name == "id" or (tag == "a" and name == "name"):
                self.anchors.add(value)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def text_of(path: Path) -> str:
    """A page's text, tags removed (code highlighting splits a line into many spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


@unittest.skipUnless(HAVE_MKDOCS, WHY_SKIPPED)
@support.once_per_ci
class BuiltSiteTests(unittest.TestCase):
    site: ClassVar[Path]
    pages: ClassVar[Dict[Path, _Page]]
    _tmp: ClassVar[tempfile.TemporaryDirectory[str]]

    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory(prefix="elefast-docs-")
        cls.addClassCleanup(cls._tmp.cleanup)
        cls.site = Path(cls._tmp.name) / "site"
        env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
        result = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
             "-f", str(DOCS / "mkdocs.yml"), "--site-dir", str(cls.site)],
            cwd=str(support.ROOT), env=env, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}")
        cls.pages = {path: parse(path) for path in sorted(cls.site.rglob("*.html"))}

    def resolve(self, page: Path, link: str) -> Tuple[Optional[Path], str, Optional[str]]:
        """(target file or None when external, fragment, the reason it is broken or None)."""
        parts = urlsplit(link)
        if parts.scheme or parts.netloc or link.startswith("//"):
            return None, "", None  # http(s):, mailto:, data:, javascript: ...: not the site's
        path = unquote(parts.path)
        if path.startswith("/"):
            # Only the 404 page may use root-relative links: a web server answers with it from any
            # depth. From disk, "/x" is the file system's root.
            if page.name != "404.html":
                return None, "", "root-relative link: does not work from file://"
            target = self.site / path.lstrip("/")
        elif path:
            target = page.parent / path
        else:
            target = page
        target = Path(os.path.normpath(target))
        if self.site not in target.parents and target != self.site:
            return None, "", "points outside the site"
        if path.endswith("/") or target.is_dir():
            return None, "", "a directory URL: from file:// it opens a directory listing"
        if not target.is_file():
            return None, "", "no such file"
        return target, parts.fragment, None

    def test_every_internal_link_is_a_file_and_every_anchor_exists(self) -> None:
        self.assertGreater(len(self.pages), 10)
        broken: List[str] = []
        walked = 0
        for page, parsed in self.pages.items():
            for tag, link in parsed.links:
                target, fragment, why = self.resolve(page, link)
                name = page.relative_to(self.site)
                if why is not None:
                    broken.append(f"{name}: <{tag}> {link!r}: {why}")
                    continue
                if target is None:
                    continue
                walked += 1
                if fragment and target.suffix == ".html":
                    anchors = self.pages[target].anchors if target in self.pages else parse(target).anchors
                    if unquote(fragment) not in anchors:
                        broken.append(f"{name}: <{tag}> {link!r}: no id {fragment!r} in {target.name}")
        if broken:
            self.fail(f"{len(broken)} broken internal links:\n" + "\n".join(broken[:60]))
        self.assertGreater(walked, 500)  # the walk saw the site's links, not an empty page

    def test_navigation_links_name_html_files(self) -> None:
        """The links of the page a reader opens first (the README says build/site/index.html)."""
        links = [link for _tag, link in self.pages[self.site / "index.html"].links]
        self.assertIn("getting-started.html", links)
        self.assertNotIn("getting-started/", links)

    def test_search_works_without_a_web_server(self) -> None:
        """The index is a script loaded with a <script> tag; no fetch, no worker (refused over file://)."""
        index = self.site / "search" / "search_index.js"
        self.assertTrue(index.is_file(), "search/search_index.js was not written (docs/hooks/search_index.py)")
        text = index.read_text(encoding="utf-8")
        prefix = "window.elefastSearchIndex = "
        self.assertTrue(text.startswith(prefix), text[:80])
        sections = json.loads(text[len(prefix):].strip().rstrip(";"))
        pages = {page for page in self.pages if page.name != "404.html"}
        indexed = set()
        for section in sections:
            self.assertTrue(section["title"] and section["page"], section)
            target, fragment, why = self.resolve(self.site / "index.html", section["location"])
            self.assertIsNone(why, section["location"])
            assert target is not None
            if fragment:
                self.assertIn(fragment, self.pages[target].anchors, section["location"])
            indexed.add(target)
        self.assertEqual(sorted(str(p.relative_to(self.site)) for p in pages - indexed), [])
        self.assertTrue(any("advisory lock" in section["text"] for section in sections))
        for page, parsed in self.pages.items():
            scripts = [link for tag, link in parsed.links if tag == "script"]
            self.assertTrue(any(link.endswith("js/search.js") for link in scripts), page.name)
        self.assertFalse((self.site / "search" / "search_index.json").exists(),
                         "the theme's worker-based search is on again: it shows a box that fails over file://")

    def test_index_says_how_to_install(self) -> None:
        self.assertIn("pip install -e '.[all]'", text_of(self.site / "index.html"))

    def test_long_code_lines_wrap(self) -> None:
        """No code is cut off at 1280 px: the site's stylesheet wraps code blocks, on every page."""
        css = (self.site / "css" / "site.css").read_text(encoding="utf-8")
        rule = re.search(r"\.md-typeset pre > code\s*\{([^}]*)\}", css)
        assert rule is not None, "css/site.css has no rule for code blocks"
        self.assertIn("white-space: pre-wrap", rule.group(1))
        for page, parsed in self.pages.items():
            self.assertTrue(any(link.endswith("css/site.css") for _tag, link in parsed.links), page.name)

    def test_how_it_works_shows_the_flow(self) -> None:
        links = [link for tag, link in self.pages[self.site / "how-it-works.html"].links if tag == "img"]
        self.assertIn("img/flow.svg", links)
        drawing = ET.parse(self.site / "img" / "flow.svg").getroot()
        words = " ".join(node.text or "" for node in drawing.iter())
        for step in ("provider", "PostgreSQL server", "template", "fingerprint", "migrator", "pool of clones",
                     "'s database", "drop"):
            self.assertIn(step, words)


@support.once_per_ci
class PicturesTests(unittest.TestCase):
    def test_every_svg_is_well_formed(self) -> None:
        """A hand-drawn SVG with a typo shows as a broken image; parse each one."""
        pictures = sorted((DOCS / "pages" / "img").glob("*.svg"))
        self.assertTrue(pictures)
        for picture in pictures:
            with self.subTest(picture=picture.name):
                root = ET.parse(picture).getroot()
                self.assertEqual(root.tag, "{http://www.w3.org/2000/svg}svg")
                self.assertIn("viewBox", root.attrib)


if __name__ == "__main__":
    unittest.main()
