"""Documents to index: text files under a root (id = path relative to it) or records (id, text, metadata)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jina_rag.errors import InvalidInputError, InvalidTypeError, check_unicode

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".mdx", ".rst", ".org", ".adoc", ".asciidoc", ".tex"})
# Stored beside the user's metadata (Chroma's metadata is flat), so users may not use them.
RESERVED_METADATA_KEYS = frozenset({"doc_id", "content_hash", "passage_index", "passage_start", "passage_end"})
# A fixed namespace makes point ids a pure function of the document id, on every machine and run.
POINT_NAMESPACE = uuid.UUID("4f6b1c52-2a8e-5d0b-9c1e-6a3f0e7d9b21")


def point_id(doc_id: str) -> str:
    """The store's id for a document's point: a UUID5 of the document id (stable across runs)."""
    return str(uuid.uuid5(POINT_NAMESPACE, doc_id))


@dataclass(frozen=True)
class Document:
    """One document to index as one vector: a unique ``id``, its ``text`` and JSON ``metadata``."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def content_hash(self) -> str:
        """SHA-256 of text and metadata: equal hashes mean the stored point is up to date."""
        canonical = json.dumps({"text": self.text, "metadata": self.metadata}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_documents(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    root: str | os.PathLike[str] | None = None,
    suffixes: Iterable[str] = TEXT_SUFFIXES,
    skipped: list[str] | None = None,
) -> Iterator[Document]:
    """Yield one document per text file, with id = path relative to the indexed root.

    A folder is walked recursively (hidden entries skipped) and is its own root; a file's root is
    its folder. ``root`` makes every id relative to one folder instead. In folders, files of other
    types are skipped (and counted in the log), and so are named pipes, sockets, devices and broken
    links (each logged); a folder left with no file to read is an error, and so is a file named
    explicitly that is not a regular file of a supported type. ``skipped``, a list, gets the ids
    the skipped files would have had: files that exist, which ``DocumentIndex.index(sync=True,
    unread_ids=...)`` must not take for deleted ones.
    """
    for file, base in document_files(paths, root=root, suffixes=suffixes, skipped=skipped):
        yield read_document_file(file, base)


def document_files(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    root: str | os.PathLike[str] | None = None,
    suffixes: Iterable[str] = TEXT_SUFFIXES,
    skipped: list[str] | None = None,
) -> Iterator[tuple[Path, Path]]:
    """The ``(file, root)`` pairs :func:`read_documents` reads, without reading them (``skipped``: see there)."""
    suffixes = frozenset(s.lower() for s in suffixes)
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        path = Path(path)
        if path.is_dir():
            files, types, passed = _walk(path, suffixes)
            if not files:
                raise InvalidInputError(_nothing_to_read(path, suffixes, types))
            if types:
                logger.warning(
                    "skipped %d files of unsupported types under %s (%s); supported: %s",
                    sum(types.values()), path, _counts(types),
                    " ".join(sorted(suffixes)),
                )
            base = path
            if skipped is not None:
                skipped.extend(_skipped_id(file, Path(root) if root is not None else base) for file in passed)
        elif path.is_file():
            if path.suffix.lower() not in suffixes:
                raise InvalidInputError(
                    f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; supported are "
                    f"{' '.join(sorted(suffixes))}. Convert it to text first, or pass it as a record."
                )
            files, base = [path], path.parent
        elif path.exists() or path.is_symlink():
            raise InvalidInputError(f"{path} is {_not_regular(path)}: give text files or folders")
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
        for file in files:
            yield file, Path(root) if root is not None else base


def _walk(folder: Path, suffixes: frozenset[str]) -> tuple[list[Path], Counter[str], list[Path]]:
    """Files to read, counts of the skipped types, and every skipped file (other types, not regular)."""
    files, types, passed = [], Counter(), []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            file = Path(directory) / name
            if file.suffix.lower() not in suffixes:
                types[file.suffix.lower()] += 1
                passed.append(file)
            elif not file.is_file():  # reading a named pipe would block forever
                logger.warning("skipped %s: %s", file, _not_regular(file))
                passed.append(file)
            else:
                files.append(file)
    return files, types, passed


def _skipped_id(file: Path, root: Path) -> str:
    """The id a skipped file would have had (its link's own path, for a link, whose target may be gone)."""
    try:
        return (file.parent.resolve() / file.name).relative_to(root.resolve()).as_posix()
    except ValueError:
        return file.as_posix()


def _nothing_to_read(folder: Path, suffixes: frozenset[str], skipped: Counter[str]) -> str:
    """Why a folder gives no documents: what it looked for, and what it found instead."""
    found = f"; it holds {sum(skipped.values())} files of other types ({_counts(skipped)})" if skipped else ""
    return (
        f"{folder} holds no files it can index: it reads files ending in {' '.join(sorted(suffixes))} "
        f"(hidden ones skipped){found}. Give a folder of text files, or other types with --suffix .EXT "
        f"(suffixes= in Python)"
    )


def _counts(skipped: Counter[str]) -> str:
    return ", ".join(f"{suffix or 'no suffix'}: {count}" for suffix, count in skipped.most_common())


def _not_regular(path: Path) -> str:
    """What a path that exists but is no regular file is, for messages."""
    if path.is_symlink() and not path.exists():
        return f"a broken symbolic link (to {os.readlink(path)})"
    return "not a regular file (a named pipe, socket or device)"


def read_document_file(file: str | os.PathLike[str], root: str | os.PathLike[str]) -> Document:
    """One text file as a document whose id is its path relative to ``root``."""
    file, root = Path(file), Path(root)
    try:
        relative = file.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise InvalidInputError(f"{file} is not inside the root {root}: pass a root that contains every path") from None
    text = read_text_file(file)
    return Document(relative, text, {"path": relative, "file_type": file.suffix.lower().lstrip(".")})


def require_file(path: str | os.PathLike[str], *, streams: bool = False) -> Path:
    """``path`` if it is a regular file; else an error saying what it is (missing, a folder, a broken link, a pipe).

    ``streams=True`` also lets named pipes and devices through, for input read once (``--lines /dev/stdin``).
    """
    path = Path(path)
    if path.is_file() or (streams and path.exists() and not path.is_dir()):
        return path
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder, not a file: give a text file")
    if path.exists() or path.is_symlink():
        raise InvalidInputError(f"{path} is {_not_regular(path)}: give a text file")
    raise FileNotFoundError(f"{path}: no such file")


def read_text_file(path: str | os.PathLike[str]) -> str:
    """A file's (or pipe's) text, refusing bytes that are not UTF-8 (never replacing them) and paths that name
    nothing to read: missing, a folder, a broken link."""
    path = require_file(path, streams=True)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInputError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): convert it to UTF-8"
        ) from None


def documents_from_records(
    records: Iterable[Document | Mapping[str, Any] | Sequence[Any]], *, start: int = 0
) -> Iterator[Document]:
    """Documents from ``Document``s, ``{"id", "text", "metadata"}`` mappings or ``(id, text[, metadata])`` tuples.

    Errors name the record by its position, counted from ``start``.
    """
    for number, record in enumerate(records, start=start):
        if isinstance(record, Document):
            yield record
            continue
        if isinstance(record, Mapping):
            doc_id, text, metadata = record.get("id"), record.get("text"), record.get("metadata") or {}
        elif isinstance(record, Sequence) and not isinstance(record, str) and len(record) in (2, 3):
            doc_id, text, metadata = record[0], record[1], record[2] if len(record) == 3 else {}
        else:
            raise InvalidTypeError(
                f"record {number} is a {type(record).__name__}: pass Document, a mapping with 'id', 'text' "
                f"and optional 'metadata', or an (id, text[, metadata]) tuple"
            )
        if doc_id is None or doc_id == "":
            raise InvalidInputError(f"record {number} has no id: every document needs a unique, non-empty 'id'")
        if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
            raise InvalidTypeError(f"record {number}: id {doc_id!r} is a {type(doc_id).__name__}; use a string")
        if not isinstance(metadata, Mapping):
            raise InvalidTypeError(f"record {number} ({doc_id}): metadata must be a mapping, not {type(metadata).__name__}")
        yield Document(str(doc_id), text, dict(metadata))


def read_records_file(path: str | os.PathLike[str]) -> Iterator[Document]:
    """Documents from a JSON Lines file, one ``{"id", "text", "metadata"}`` object per line."""
    path = require_file(path, streams=True)

    def records() -> Iterator[Any]:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as error:
                        raise InvalidInputError(f"{path}:{number}: not a JSON object ({error.msg})") from None

    yield from documents_from_records(records())


def validate_documents(documents: Iterable[Document]) -> list[Document]:
    """Check every document before anything is encoded or written, so bad input never half-lands."""
    checked: list[Document] = []
    seen: set[str] = set()
    for document in documents:
        where = f"document {document.id!r}"
        if document.id in seen:
            raise InvalidInputError(f"{where} appears twice: document ids must be unique within one run")
        seen.add(document.id)
        if not isinstance(document.text, str):
            raise InvalidTypeError(f"{where}: text is a {type(document.text).__name__}, not str")
        if not document.text.strip():
            raise InvalidInputError(f"{where} is empty or whitespace only: remove it or give it text")
        check_unicode(document.text, where)
        reserved = RESERVED_METADATA_KEYS.intersection(document.metadata)
        if reserved:
            raise InvalidInputError(f"{where}: metadata key(s) {', '.join(sorted(reserved))} are reserved for the index; rename them")
        try:
            json.dumps(dict(document.metadata))
        except (TypeError, ValueError) as error:
            raise InvalidTypeError(f"{where}: metadata must be JSON-serialisable ({error})") from None
        checked.append(document)
    return checked
