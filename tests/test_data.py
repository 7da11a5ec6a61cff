"""The data build (training/data): cleaning, query design, the answer-position check, the NarrativeQA layout."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess

import pytest

pytest.importorskip("bs4", reason="the data build needs beautifulsoup4 and lxml (pip install jina-rag[data])")

from jina_rag import eval as ev  # noqa: E402
from training.data.build import check_long_set, write_beir  # noqa: E402
from training.data.extract import Document, Section, html_to_document, read_document  # noqa: E402
from training.data.narrativeqa import write_narrativeqa  # noqa: E402
from training.data.sources import Source  # noqa: E402
from training.data.tasks import (  # noqa: E402
    Tokens, deep_heading_queries, good_heading, long_retrieval_set, short_retrieval_set, training_pairs, unique_headings,
)

PAGE = """<html><head><title>Ignored tab title</title><script>var x = 1;</script></head><body>
<div class="nav">Home | Docs</div>
<div class="body">
<h1>Write-Ahead Logging<a class="headerlink" href="#wal">¶</a></h1>
<nav class="contents"><ul><li><a href="#a">1. How WAL Works</a></li></ul></nav>
<p>The default method is a <b>rollback</b>
journal.</p>
<h2 id="a">1.1. How WAL Works</h2>
<p>Changes are appended&nbsp;to a separate file.</p>
<pre>PRAGMA journal_mode=WAL;
    -- indented line</pre>
<ul><li>first item</li><li>second item</li></ul>
<h3>Chapter 2. Checkpointing</h3><table><tr><td>cell one</td><td>cell two</td></tr></table>
</div></body></html>"""


def test_html_becomes_titled_sections_without_navigation():
    document = html_to_document(PAGE, "pkg:/x.html", "pkg", root="div.body", drop=("nav.contents", "a.headerlink"), title="div.body h1")
    assert document.title == "Write-Ahead Logging"
    assert [(s.heading, s.level) for s in document.sections] == [("", 1), ("How WAL Works", 2), ("Checkpointing", 3)]
    assert document.sections[0].text == "The default method is a rollback journal."
    assert document.sections[1].text == (
        "Changes are appended to a separate file.\n\nPRAGMA journal_mode=WAL;\n    -- indented line\n\nfirst item\n\nsecond item"
    )
    assert document.sections[2].text == "cell one cell two"
    text = document.text()
    assert "Home" not in text and "var x" not in text and "¶" not in text and "1. How WAL" not in text
    assert document.text(without_headings=frozenset({1})).count("How WAL Works") == 0


def test_man_page_summary_becomes_the_title(tmp_path):
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (apt-get install mandoc)")
    page = tmp_path / "frob.1.gz"
    page.write_bytes(gzip.compress(
        b".TH FROB 1\n.SH NAME\nfrob \\- twiddle the bits of a file\n.SH DESCRIPTION\n"
        b"Frob flips bits.\n.SS Bit order\nLowest first.\n.SH SEE ALSO\nxor(1)\n"
    ))
    source = Source("manpages", "train", "x", "man", include="", root="div.manual-text", title="", name_is_title=True)
    document = read_document(source, page)
    assert document.title == "frob - twiddle the bits of a file"
    assert [s.heading for s in document.sections] == ["DESCRIPTION", "Bit order", "SEE ALSO"]
    assert document.sections[1].text == "Lowest first."


def test_pod_is_read_through_pod2html(tmp_path):
    if shutil.which("pod2html") is None:
        pytest.skip("pod2html (perl) is not installed")
    pod = tmp_path / "perlfrob.pod"
    pod.write_text("=head1 NAME\n\nperlfrob - frobbing in Perl\n\n=head1 DESCRIPTION\n\nUse C<frob()> to frob.\n\n"
                   "=head2 Frobbing Lists\n\nB<Each> element is frobbed.\n\n=cut\n")
    source = Source("perl-doc", "train", "x", "pod", include="", title="", name_is_title=True)
    document = read_document(source, pod)
    assert document.title == "perlfrob - frobbing in Perl"
    assert [(s.heading, s.text) for s in document.sections] == [
        ("DESCRIPTION", "Use frob() to frob."), ("Frobbing Lists", "Each element is frobbed."),
    ]
    assert not list(tmp_path.glob("pod2htm*"))  # pod2html's cache stays out of the way


def test_heading_filter_keeps_query_like_headings():
    assert good_heading("Determination of input data (FROM clause processing)")
    assert good_heading("Recovering from upstream rebase")
    for bad in ("OPTIONS", "Next Steps", "Caveats And Bugs", "sqlite3_open_v2()", "--no-verify", "x" * 130):
        assert not good_heading(bad), bad


WORDS = "page cache journal index cursor vacuum schema trigger column btree record lock".split()


def filler(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "."


def long_document(doc_id: str = "d", intro_words: int = 300, mention: str = "") -> Document:
    """An intro of about ``intro_words`` tokens, a section starting there, then later sections."""
    return Document(doc_id, "pkg", f"Storage Engine Guide {doc_id}", [
        Section("", 1, f"{mention} " + filler(intro_words, 1)),
        Section("Early Section Heading Words", 2, filler(200, 2)),
        Section("Sorting Temporary Records Deeply", 2, filler(300, 3)),
        Section("Recovering Interrupted Transactions", 2, filler(300, 4)),
        Section("Mentioned Locking Protocol Details", 2, filler(300, 5)),
    ])


def test_deep_heading_queries_need_more_than_512_tokens():
    tokens = Tokens()
    document = long_document(intro_words=300, mention="See Mentioned Locking Protocol Details below.")
    unique = unique_headings([document])
    text, answers = deep_heading_queries(document, unique, tokens, random.Random(0), per_document=5)
    asked = {a.query for a in answers}
    # "Early Section Heading Words" starts before token 512; the intro names the last heading.
    assert asked == {"Sorting Temporary Records Deeply", "Recovering Interrupted Transactions"}
    offsets = tokens.offsets(text)
    for answer in answers:
        assert answer.query not in text  # the heading is removed from the document
        assert answer.token_start >= 512
        assert offsets[answer.token_start][0] >= answer.char_start  # the token really is the section's first
        assert text[answer.char_start: answer.char_end] == document.sections[answer.section].text
    assert "Early Section Heading Words" in text and "Mentioned Locking Protocol Details" in text


def test_long_set_check_counts_where_answers_live(tmp_path):
    tokens = Tokens()
    documents = [(f"pkg/{i}", long_document(str(i), intro_words=300 + 40 * i)) for i in range(3)]
    # Headings repeated across documents are no queries: make them unique per document.
    for i, (_, document) in enumerate(documents):
        for section in document.sections[1:]:
            section.heading += f" Variant{'ABC'[i]}"
    corpus, queries, qrels = long_retrieval_set(documents, tokens, random.Random(0), min_tokens=800, max_tokens=3000)
    assert len(corpus) == 3 and len(queries) == 6
    write_beir(tmp_path / "long", corpus, queries, qrels)
    report = check_long_set(tmp_path / "long", tokens)
    assert report["queries"] == 6 and report["answer_start_token"]["min"] >= 512
    assert sum(report["answer_start_histogram"].values()) == 6
    # The same check fails on a set whose answer sits in the first 512 tokens.
    early = dict(queries[0], metadata={**queries[0]["metadata"], "answer_char_start": 0})
    write_beir(tmp_path / "bad", corpus, [early], {early["_id"]: qrels[early["_id"]]})
    with pytest.raises(AssertionError, match="within the first 512 tokens"):
        check_long_set(tmp_path / "bad", tokens)
    # The written set loads through the harness, and the NarrativeQA layout holds the same questions.
    assert len(ev.load_beir(tmp_path / "long").query_ids) == 6
    write_narrativeqa(tmp_path / "nqa", corpus, queries, qrels)
    data = ev.load_narrativeqa(tmp_path / "nqa")
    assert len(data.doc_ids) == 3 and sorted(data.query_texts) == sorted(q["text"] for q in queries)
    assert sorted(data.doc_texts) == sorted(ev.corpus_text(c["title"], c["text"]) for c in corpus)


def test_short_set_and_training_pairs():
    tokens = Tokens()
    documents = [
        ("git/frob.html", Document("git:/frob", "git", "git-frob - Twiddle the bits of tracked files", [
            Section("DESCRIPTION", 2, filler(400, 7)),
            Section("Configuring Bit Order Rules", 2, filler(80, 8)),
        ])),
        ("git/guide.html", long_document("g", intro_words=900)),
    ]
    corpus, queries, qrels = short_retrieval_set(documents, tokens, random.Random(0))
    assert {q["metadata"]["kind"] for q in queries} == {"heading", "summary"}
    assert all(n + 2 <= 256 for n in tokens.count([ev.corpus_text(c["title"], c["text"]) for c in corpus]))  # with [CLS], [SEP]
    passages = {c["_id"]: c for c in corpus}
    summary = next(q for q in queries if q["metadata"]["kind"] == "summary")
    assert summary["text"] == "Twiddle the bits of tracked files"
    (target,) = qrels[summary["_id"]]
    assert target == "git/frob.html#0.0" and passages[target]["title"] == "git-frob"  # no summary in the title
    for query in queries:
        (target,) = qrels[query["_id"]]
        assert query["text"] not in passages[target]["text"]

    pairs = training_pairs(documents, tokens, random.Random(0))
    kinds = {p["kind"] for p in pairs}
    assert kinds == {"heading_section", "summary_page", "title_body", "heading_document"}
    for pair in pairs:
        if pair["kind"] == "heading_document":
            assert pair["query"] not in pair["positive"] and tokens.count([pair["positive"]])[0] > 512


def test_build_needs_both_splits(tmp_path):
    from training.data.build import build

    with pytest.raises(ValueError, match="at least one training and one evaluation package"):
        build(tmp_path, install=False, packages=["sqlite3-doc"])


def test_samples_are_small_and_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    samples, narrativeqa = root / "training" / "data" / "samples", root / "examples" / "data" / "narrativeqa_sample"
    size = sum(f.stat().st_size for f in samples.rglob("*") if f.is_file())
    assert 0 < size < 400_000
    for name in ("long", "short"):
        assert len(ev.load_beir(samples / name).query_ids) > 0
    for line in open(samples / "pairs.jsonl"):
        row = json.loads(line)
        assert row["query"] and row["positive"] and row["package"] == "python3.11-doc"
    data = ev.load_narrativeqa(narrativeqa)
    assert len(data.doc_ids) >= 10 and len(data.query_ids) >= 15
    assert sum(f.stat().st_size for f in narrativeqa.rglob("*") if f.is_file()) < 400_000
    subprocess.run(["git", "-C", str(root), "check-ignore", "-q", "data/x"], check=True)  # full builds stay out of git


def test_cut_of_a_long_text_equals_tokenising_it_whole():
    tokens = Tokens()
    rng = random.Random(1)
    words = ["kernel", "schedules", "processes", "unbelievably", "x", "naïve", "foo.bar(baz)", "Δelta", "42", "\n\n"]
    text = " ".join(rng.choice(words) for _ in range(6000)) + " " + "y" * 5000  # ends in one huge word
    for max_tokens in (1, 7, 512, 2000, 20000):
        offsets = tokens.offsets(text)
        whole = text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]]
        assert tokens.cut(text, max_tokens) == whole
    no_spaces = "abc," * 3000
    offsets = tokens.offsets(no_spaces)
    assert tokens.cut(no_spaces, 100) == no_spaces[: offsets[99][1]]


def test_training_tuning_and_evaluation_packages_are_disjoint():
    from training.data.sources import SOURCES

    splits = {split: {s.package for s in SOURCES if s.split == split} for split in ("train", "tune", "eval")}
    assert all(splits.values())
    assert sum(len(packages) for packages in splits.values()) == len({s.package for s in SOURCES})


POSTGRES_PAGE = """<html><head><title>28.2. The Cumulative Statistics System</title></head><body>
<div class="navheader"><table><tr><th>28.2. The Cumulative Statistics System</th></tr>
<tr><td><a href="x.html">Prev</a></td><td>Chapter 28. Monitoring Database Activity</td></tr></table></div>
<div class="sect1"><h2 class="title">28.2. The Cumulative Statistics System</h2>
<div class="toc"><dl><dt>28.2.1. Statistics Collection Configuration</dt></dl></div>
<p>PostgreSQL's cumulative statistics system collects activity.</p>
<div class="sect2"><h3 class="title">28.2.1. Statistics Collection Configuration</h3><p>Collection adds overhead.</p></div>
</div><div class="navfooter"><a href="y.html">Next</a> 28.3. Viewing Locks</div></body></html>"""


def test_tuning_package_pages_read_without_navigation():
    from training.data.sources import SOURCES

    (source,) = [s for s in SOURCES if s.split == "tune"]
    document = html_to_document(POSTGRES_PAGE, "pg:/x.html", source.package, root=source.root, drop=source.drop, title=source.title)
    assert document.title == "The Cumulative Statistics System"
    assert [s.heading for s in document.sections] == ["", "Statistics Collection Configuration"]
    text = document.text()
    assert "Prev" not in text and "Next" not in text and "Viewing Locks" not in text
    assert text.count("Statistics Collection Configuration") == 1  # the table of contents is gone
