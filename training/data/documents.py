"""Extracting every document of the source packages, in parallel, cached per package version."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from training.data.extract import Document, Section, read_document
from training.data.sources import Source

logger = logging.getLogger(__name__)

# Bump when extraction changes, so cached documents are rebuilt.
EXTRACTOR_VERSION = 2


def _read(task: tuple[Source, Path]) -> Document | str:
    source, path = task
    try:
        return read_document(source, path)
    except Exception as error:  # one broken file must not stop the build; it is counted and logged
        return f"{path}: {type(error).__name__}: {error}"


def write_documents(path: Path, documents: Iterable[Document]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for document in documents:
            f.write(json.dumps(asdict(document), ensure_ascii=False) + "\n")


def read_documents(path: Path) -> list[Document]:
    documents = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            row["sections"] = [Section(**s) for s in row["sections"]]
            documents.append(Document(**row))
    return documents


def extract_package(source: Source, version: str, cache_dir: Path, jobs: int, show_progress: bool = True) -> list[Document]:
    """All documents of one package; read from ``cache_dir`` when built from the same version before."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached, meta_file = cache_dir / f"{source.package}.jsonl", cache_dir / f"{source.package}.meta.json"
    stamp = {"package": source.package, "version": version, "extractor": EXTRACTOR_VERSION, "source": repr(source)}
    if cached.is_file() and meta_file.is_file() and json.loads(meta_file.read_text())["stamp"] == stamp:
        logger.info("%s: reusing %s", source.package, cached)
        return read_documents(cached)
    files = source.files()
    if not files:
        raise RuntimeError(f"{source.package} {version}: no file matches {source.include!r}; has the package layout changed?")
    documents: list[Document] = []
    failures: list[str] = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = pool.map(_read, [(source, f) for f in files], chunksize=8)
        for result in tqdm(results, total=len(files), desc=source.package, unit="file", disable=not show_progress):
            (failures.append if isinstance(result, str) else documents.append)(result)
    for failure in failures[:5]:
        logger.warning("skipped %s", failure)
    if len(failures) > len(files) // 10:
        raise RuntimeError(f"{source.package}: {len(failures)} of {len(files)} files failed to extract, e.g. {failures[0]}")
    write_documents(cached, documents)
    meta_file.write_text(json.dumps({"stamp": stamp, "files": len(files), "failed": len(failures)}, indent=1))
    return documents
