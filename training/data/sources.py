"""The Debian packages the data comes from, which split each feeds, and how to read them.

Training, tuning and evaluation are split by package: no text of an evaluation package is trained
on, and settings (fusion weights, BM25 parameters) are chosen on a package the model never saw
either, so the choice is not biased toward the dense model on its own training text.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

Split = Literal["train", "tune", "eval"]
Format = Literal["html", "pod", "man"]

# Parts of Sphinx pages that are navigation, not content (tables of contents would leak headings).
SPHINX_DROP = (
    "a.headerlink", "div.toctree-wrapper", "nav.contents", "div.contents", "div.topic.contents",
    "aside.topic", "div.sphinxsidebar", "div.related", "div.footer",
)


@dataclass(frozen=True)
class Source:
    """One Debian package and how to turn its files into documents."""

    package: str
    split: Split
    licence: str
    format: Format
    include: str  # regex on the package's file paths (from ``dpkg -L``)
    exclude: str = r"^$"
    root: str = "body"  # CSS selector of the content
    drop: tuple[str, ...] = ()  # CSS selectors removed before reading (navigation, tables of contents)
    title: str = "title"  # CSS selectors of the document title, first match wins ("" for none)
    # Man-page style: the NAME section ("ls - list directory contents") becomes the title.
    name_is_title: bool = False
    # Shipped samples are cut only from packages whose licence allows it without conditions.
    sample_ok: bool = False

    def files(self) -> list[Path]:
        include, exclude = re.compile(self.include), re.compile(self.exclude)
        return sorted(
            Path(p) for p in package_files(self.package)
            if include.search(p) and not exclude.search(p) and Path(p).is_file()
        )


SOURCES: tuple[Source, ...] = (
    # --- training ---
    Source(
        "linux-doc-6.12", "train", "GPL-2", "html",
        include=r"/html/.*\.html$", exclude=r"/html/(_sources|_static|_images|_downloads|translations)/|/(genindex|search|index)\.html$",
        root="div.body", drop=SPHINX_DROP + ("div.kerneltoc",), title="div.body h1",
    ),
    Source(
        "python3.11-doc", "train", "PSF-2.0", "html",
        include=r"/html/.*\.html$", exclude=r"/html/(_sources|_static|_images)/|genindex|/search\.html$|modindex|/whatsnew/changelog\.html$",
        root="div.body", drop=SPHINX_DROP, title="div.body h1", sample_ok=True,
    ),
    Source("perl-doc", "train", "Artistic or GPL-1+", "pod", include=r"/pod/.*\.pod$", title="", name_is_title=True),
    Source(
        "octave-doc", "train", "GPL-3+", "html",
        include=r"/octave\.html/.*\.html$", exclude=r"/(index|Concept-Index|Function-Index|Operator-Index|Graphics-Properties-Index)\.html$",
        drop=("div.nav-panel", "div.header", "ul.mini-toc", "table.menu", "div.Contents_element"), title="h2, h3, h4, title",
    ),
    Source(
        "debian-reference-en", "train", "GPL-2+", "html",
        include=r"/debian-reference/(ch\d+|apa)\.en\.html$",
        drop=("div.toc", "div.navheader", "div.navfooter", "div.list-of-tables", "div.list-of-figures"), title="h1",
    ),
    Source(
        "gnu-standards", "train", "GFDL-1.3+", "html", include=r"/(standards|maintain)\.html$",
        drop=("div.Contents_element", "div.Overview_element", "div.shortcontents", "div.contents", "div.nav-panel", "div.header"), title="h1",
    ),
    Source("manpages", "train", "various free (see the package's copyright)", "man", include=r"/man/man\d/.*\.gz$", root="div.manual-text", title="", name_is_title=True),
    Source("manpages-dev", "train", "various free (see the package's copyright)", "man", include=r"/man/man\d/.*\.gz$", root="div.manual-text", title="", name_is_title=True),
    # --- tuning (never trained on, never evaluated on: choosing settings only) ---
    Source(
        "postgresql-doc-15", "tune", "PostgreSQL", "html",
        include=r"/html/[^/]+\.html$", exclude=r"/(index|bookindex|biblio|release(-\d+)*)\.html$",
        drop=("div.navheader", "div.navfooter", "div.toc"), title="title",
    ),
    # --- evaluation (never trained on) ---
    Source(
        "sqlite3-doc", "eval", "public-domain", "html",
        include=r"/sqlite3/[^/]+\.html$|/sqlite3/c3ref/[^/]+\.html$",
        exclude=r"(crossref|toc|sitemap|keyword_index|doclist|index|changes|chronology|releaselog|news|fileio)\.html$",
        drop=("div.nosearch", "div.fancy_toc", "div.imgcontainer", "svg", "button", "form", "div.fancy_title"),
        title="div.fancy_title, div.nosearch > h2, title", sample_ok=True,
    ),
    Source(
        "git-doc", "eval", "GPL-2", "html", include=r"/git-doc/.*\.html$", exclude=r"/(index|RelNotes.*)\.html$",
        drop=("div#toc", "div#footer"), title="h1", name_is_title=True,
    ),
)

# Tools the build runs, and the Debian packages that ship them.
TOOL_PACKAGES = {"mandoc": "mandoc", "pod2html": "perl"}


def package_version(package: str) -> str | None:
    """The installed version of a Debian package, or None when it is not installed."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status} ${Version}", package], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise RuntimeError("dpkg-query not found: the data build reads Debian packages and needs a Debian-based system") from None
    words = result.stdout.split()
    if result.returncode != 0 or words[:3] != ["install", "ok", "installed"]:
        return None
    return words[3]


def package_files(package: str) -> list[str]:
    result = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dpkg -L {package} failed: {result.stderr.strip()}")
    return result.stdout.splitlines()


def ensure_installed(packages: list[str], install: bool) -> dict[str, str]:
    """Versions of the packages, installing the missing ones with apt-get when ``install`` is set."""
    missing = [p for p in packages if package_version(p) is None]
    if missing:
        command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        if not install:
            raise RuntimeError(f"missing Debian packages {', '.join(missing)}: run `{' '.join(command)}` (as root) or drop --no-install")
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError(f"missing Debian packages {', '.join(missing)} and not root: run `sudo {' '.join(command)}`")
        logger.info("installing %s", " ".join(missing))
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(command, env=environment, check=False).returncode != 0:
            logger.info("apt-get install failed; refreshing the package lists and trying again")
            subprocess.run(["apt-get", "update"], env=environment, check=True)
            subprocess.run(command, env=environment, check=True)
    versions = {p: package_version(p) for p in packages}
    still_missing = [p for p, v in versions.items() if v is None]
    if still_missing:
        raise RuntimeError(f"Debian packages {', '.join(still_missing)} are still not installed")
    return versions  # type: ignore[return-value]
