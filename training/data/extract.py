"""Cleaning documentation files (HTML, POD, man) into documents made of titled sections.

Every format goes through HTML: POD through ``pod2html``, man pages through ``mandoc -T html``;
then one reader walks the HTML, turning headings into section breaks and blocks into paragraphs.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, ProcessingInstruction, Tag, XMLParsedAsHTMLWarning

from training.data.sources import Source

HEADING_LEVELS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "caption", "dd", "details", "div", "dl", "dt", "figcaption",
    "figure", "footer", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table",
    "tbody", "thead", "tfoot", "tr", "ul",
}
ALWAYS_DROP = ("script", "style", "noscript", "svg", "img", "map", "object", "iframe", "link", "meta", "head")
# "5.1.2. The hostname", "2 Keeping Free Software Free", "Chapter 5. Network setup", "A.1. Tools".
NUMBERING = re.compile(r"^(?:(?:chapter|appendix|section|part)\s+)?(?:\d+(?:\.\d+)*\.?|[A-Z](?:\.\d+)*\.)\s+(?=\S)", re.I)
HEADING_MARK = "\x00"
PRE_START, PRE_END = "\x01", "\x02"
SPACES = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")


@dataclass
class Section:
    heading: str  # empty for the text before the first heading
    level: int
    text: str


@dataclass
class Document:
    doc_id: str  # "<package>:<path inside the package>"
    package: str
    title: str
    sections: list[Section] = field(default_factory=list)

    def text(self, without_headings: frozenset[int] = frozenset()) -> str:
        """Title, then each section's heading and text; headings of sections in ``without_headings`` are left out."""
        return "\n\n".join(p for p, _ in self.parts(without_headings))

    def parts(self, without_headings: frozenset[int] = frozenset()) -> list[tuple[str, int | None]]:
        """The text's paragraphs-in-order as ``(text, section index or None for headings and title)``."""
        parts: list[tuple[str, int | None]] = [(self.title, None)]
        for index, section in enumerate(self.sections):
            if section.heading and index not in without_headings:
                parts.append((section.heading, None))
            if section.text:
                parts.append((section.text, index))
        return parts


def clean_heading(text: str) -> str:
    return NUMBERING.sub("", " ".join(text.replace("\u00b6", " ").split())).strip()


def _walk(node: Tag, out: list[str], in_pre: bool) -> None:
    for child in node.children:
        if isinstance(child, (Comment, Declaration, Doctype, ProcessingInstruction)):
            continue
        if isinstance(child, NavigableString):
            out.append(str(child) if in_pre else SPACES.sub(" ", str(child).replace("\n", " ")))
            continue
        if not isinstance(child, Tag):
            continue
        name = child.name
        if name in HEADING_LEVELS:
            heading = clean_heading(child.get_text(" "))
            out.append(f"\n{HEADING_MARK}{HEADING_LEVELS[name]}{HEADING_MARK}{heading}\n")
        elif name == "br":
            out.append("\n")
        elif name in ("td", "th"):
            out.append(" ")
            _walk(child, out, in_pre)
            out.append(" ")
        else:
            block = name in BLOCK_TAGS
            if block:
                out.append("\n\n" if name in ("p", "pre", "table", "dl", "ul", "ol", "blockquote") else "\n")
            starts_pre = name == "pre" and not in_pre
            if starts_pre:
                out.append(PRE_START)
            _walk(child, out, in_pre or name == "pre")
            if starts_pre:
                out.append(PRE_END)
            if block:
                out.append("\n\n" if name in ("p", "pre", "table", "dl", "ul", "ol", "blockquote") else "\n")


def _paragraphs(raw: str) -> str:
    """Strip lines, except inside ``pre`` where indentation is kept; at most one blank line in a row."""
    pieces = []
    for index, piece in enumerate(re.split(f"[{PRE_START}{PRE_END}]", raw)):
        in_pre = index % 2 == 1
        pieces.append("\n".join(line.rstrip() if in_pre else " ".join(line.split()) for line in piece.split("\n")))
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", "".join(pieces)).strip("\n").strip()


def html_to_document(html: str, doc_id: str, package: str, *, root: str = "body", drop: tuple[str, ...] = (),
                     title: str = "title") -> Document:
    """Read an HTML page into a :class:`Document`: title, then sections split at h1–h6."""
    with warnings.catch_warnings():  # pod2html writes XHTML, which lxml's HTML parser reads fine
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(html, "lxml")
    title_text = ""
    for selector in filter(None, (s.strip() for s in title.split(","))):
        found = soup.select_one(selector)
        if found is not None and found.get_text(strip=True):
            title_text = clean_heading(found.get_text(" "))
            break
    for selector in ALWAYS_DROP + drop:
        for element in soup.select(selector):
            element.decompose()
    content = soup.select_one(root) or soup.body or soup
    out: list[str] = []
    _walk(content, out, in_pre=False)
    sections: list[Section] = []
    heading, level = "", 0
    for chunk in re.split(f"\n?({HEADING_MARK}\\d{HEADING_MARK}[^\n]*)\n", "".join(out)):
        if chunk.startswith(HEADING_MARK):
            _, level_text, heading = chunk.split(HEADING_MARK, 2)
            level = int(level_text)
            continue
        text = _paragraphs(chunk)
        if heading or text:
            sections.append(Section(heading, level, text))
        heading = ""
    # A first heading equal to the title is the title itself, not a section.
    if sections and sections[0].heading and sections[0].heading.lower() == title_text.lower():
        sections[0].heading = ""
    sections = [s for s in sections if s.heading or s.text]
    return Document(doc_id, package, title_text, sections)


def pod_to_html(path: Path) -> str:
    with tempfile.TemporaryDirectory() as cache:
        result = subprocess.run(
            ["pod2html", "--quiet", "--noindex", "--cachedir", cache, f"--infile={path}"],
            capture_output=True, text=True, check=False, errors="replace",
        )
    if result.returncode != 0:
        raise RuntimeError(f"pod2html failed on {path}: {result.stderr.strip()[:200]}")
    return result.stdout


def man_to_html(path: Path) -> str:
    result = subprocess.run(
        ["mandoc", "-T", "html", "-O", "fragment", str(path)], capture_output=True, text=True, check=False, errors="replace"
    )
    if not result.stdout.strip():
        raise RuntimeError(f"mandoc produced nothing for {path}: {result.stderr.strip()[:200]}")
    return result.stdout


def _read_html(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8", errors="replace")


def _summary_title(document: Document) -> None:
    """Man-page style: the NAME section ("ls - list directory contents") becomes the title."""
    for index, section in enumerate(document.sections):
        if section.heading.upper() == "NAME" and section.text:
            document.title = SPACES.sub(" ", section.text.replace("\n", " ")).strip()
            del document.sections[index]
            return


def read_document(source: Source, path: Path) -> Document:
    """One file of a source package as a :class:`Document`."""
    doc_id = f"{source.package}:{path}"
    if source.format == "pod":
        html = pod_to_html(path)
    elif source.format == "man":
        html = man_to_html(path)
    else:
        html = _read_html(path)
    document = html_to_document(html, doc_id, source.package, root=source.root, drop=source.drop, title=source.title)
    if source.name_is_title:
        _summary_title(document)
    if not document.title:
        document.title = path.name.split(".")[0]
    return document
