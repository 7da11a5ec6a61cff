"""The ``jina-rag`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from jina_rag.encoder import JinaEncoder
from jina_rag.errors import InvalidInputError, JinaRagError
from jina_rag.index import INDEX_MODES, STORES, DocumentIndex, IndexingError, read_documents, read_records_file
from jina_rag.index.documents import read_text_file
from jina_rag.late_chunking import DEFAULT_CHUNK_TOKENS
from jina_rag.loading import MODEL_ENV_VAR
from jina_rag.settings import ATTENTIONS, BACKENDS, DEFAULT_SETTINGS, LONG_TEXT_POLICIES, EncoderSettings

logger = logging.getLogger("jina_rag.cli")

Command = Callable[[argparse.Namespace], int]


def add_encoder_arguments(parser: argparse.ArgumentParser, *, normalize: bool = False) -> None:
    """The encoder's flags (every :class:`EncoderSettings` field; ``--no-normalize`` only with ``normalize``),
    and ``--no-progress``: what every command that loads a model takes. Defaults are the settings' own."""
    default = DEFAULT_SETTINGS
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help=f"folder or hub id (default: ${MODEL_ENV_VAR}, the shipped model, or the hub's small model)")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    group.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: float32 on CPU, bfloat16 on CUDA)")
    group.add_argument("--max-length", type=int, default=None, help=f"tokens per pass (default: {default.max_length})")
    group.add_argument("--long-text", choices=LONG_TEXT_POLICIES, default=None, help=f"what to do with texts over --max-length (default: {default.long_text})")
    group.add_argument("--window-overlap", type=int, default=None, metavar="TOKENS", help="tokens shared by neighbouring windows of a long text (default: max-length / 8)")
    group.add_argument("--batch-tokens", type=int, default=None, help=f"tokens per batch, padding included (default: {default.batch_tokens})")
    if normalize:
        group.add_argument("--no-normalize", action="store_true", help="keep raw mean-pooled vectors")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    group.add_argument("--backend", choices=BACKENDS, default=None, help=f"torch, or onnx for a folder from export-onnx (default: {default.backend})")
    group.add_argument("--providers", default=None, help="ONNX Runtime execution providers, comma-separated (default: CPUExecutionProvider)")
    group.add_argument("--alibi-cutoff", type=float, default=None, metavar="LOGITS",
                       help="CUDA only: skip attention tiles whose ALiBi penalty is at least this many logits, e.g. 64 "
                            "(1.7x faster at 8192 tokens; default: exact attention)")
    group.add_argument("--attention", choices=ATTENTIONS, default=None,
                       help=f"flash: FlashAttention-4 for every packed row (CUDA, jina-rag[flash]; default: {default.attention})")


def settings_from_args(args: argparse.Namespace) -> EncoderSettings:
    """The encoder settings of a command's flags: each flag not given keeps the settings' default."""
    given = {
        "model": args.model, "device": args.device, "dtype": args.dtype, "max_length": args.max_length,
        "long_text": args.long_text, "window_overlap": args.window_overlap, "backend": args.backend,
        "providers": args.providers.split(",") if args.providers else None, "alibi_cutoff": args.alibi_cutoff,
        "attention": args.attention, "batch_tokens": args.batch_tokens,
        "normalize": False if getattr(args, "no_normalize", False) else None,
    }
    return EncoderSettings(**{name: value for name, value in given.items() if value is not None})


def encoder_from_args(args: argparse.Namespace) -> JinaEncoder:
    """The encoder of a command's flags, loaded."""
    return JinaEncoder.from_settings(settings_from_args(args))


def _read_texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.texts)
    # As `index` reads files: bytes that are not UTF-8 are refused, never replaced.
    texts.extend(read_text_file(file) for file in args.file or [])
    if args.lines:
        # split("\n") after universal-newline decoding: the lines `for line in file` gives.
        texts.extend(line for line in read_text_file(args.lines).split("\n") if line.strip())
    if not texts:
        raise InvalidInputError("nothing to embed: give TEXT arguments, --file or --lines")
    return texts


def _parallel(text: str) -> int | list[str]:
    """``--parallel``: a number of worker processes, or devices separated by commas."""
    if text.isdigit():
        return int(text)
    devices = [name.strip() for name in text.split(",") if name.strip()]
    if not devices or any(name.isdigit() for name in devices):
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of workers nor devices such as cuda:0,cuda:1")
    return devices


PARALLEL_HELP = ("encode over N worker processes sharing this machine's cores, or one per listed device "
                 "(cuda:0,cuda:1); default: this process alone")


def cmd_embed(args: argparse.Namespace) -> int:
    texts = _read_texts(args)
    encoder = encoder_from_args(args)
    try:
        vectors = encoder.encode(texts, show_progress=False if args.no_progress else None, parallel=args.parallel)
    finally:
        encoder.close()
    if args.output and args.output.endswith(".npy"):
        import numpy as np

        np.save(args.output, vectors)
    else:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
        try:
            for index, vector in enumerate(vectors):
                out.write(json.dumps({"index": index, "embedding": [round(float(x), 7) for x in vector]}) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
    if args.output:  # stdout is free: say what was written
        print(f"wrote {len(vectors)} vectors of dimension {vectors.shape[1]} to {args.output}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = encoder_from_args(args).info()
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _comma_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 512,2048,8192, got {text!r}") from None
    if not values or min(values) < 8:
        raise argparse.ArgumentTypeError(f"expected token counts of at least 8, got {text!r}")
    return values


def _compare_lengths(text: str) -> list[int | None]:
    return [None if v.strip() == "default" else _comma_ints(v)[0] for v in text.split(",")]


DEFAULT_EVAL_LENGTHS = (512, 2048, 8192)


def cmd_eval(args: argparse.Namespace) -> int:
    from jina_rag import eval as evaluation

    data = evaluation.load_dataset(args.dataset, split=args.split, stories_dir=args.stories_dir)
    if args.max_queries:
        data = data.subset(args.max_queries)
    print(f"{data.name}: {len(data.doc_ids)} documents, {len(data.query_ids)} queries", file=sys.stderr)
    show_progress = not args.no_progress and sys.stderr.isatty()
    retrievers: list = []
    if not args.no_jina:
        lengths = args.max_lengths or ([args.max_length] if args.max_length else list(DEFAULT_EVAL_LENGTHS))
        settings = settings_from_args(args)
        retrievers += evaluation.jina_retrievers(
            None, lengths, make_encoder=lambda m: JinaEncoder.from_settings(settings.replace(max_length=m))
        )
    for model in args.compare or []:
        retrievers += evaluation.comparison_retrievers(model, args.compare_max_lengths, args.chunk_tokens, args.device)
    if not args.no_bm25:
        retrievers.append(evaluation.BM25Retriever())
    if not retrievers:
        raise InvalidInputError("nothing to evaluate: drop --no-jina or --no-bm25, or add --compare MODEL")
    results = []
    for retriever in retrievers:
        results.append(evaluation.evaluate(data, retriever, show_progress=show_progress))
        print(f"  {retriever.name}: nDCG@10 {results[-1].metrics['ndcg@10']:.4f} ({results[-1].seconds:.0f} s)", file=sys.stderr)
    print(evaluation.format_table(results))
    jina = [r for r in results if r.system.startswith("jina max_length=")]
    if len(jina) > 1:
        print("\nnDCG@10 against max_length: " + "  ".join(f"{r.system.split('=')[1]}: {r.metrics['ndcg@10']:.4f}" for r in jina))
    if args.output:
        evaluation.write_results(results, args.output)
    return 0


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """Options naming the vector store and collection (``index`` and ``search``)."""
    group = parser.add_argument_group("store")
    group.add_argument("--store", choices=STORES, required=True, help="vector store")
    group.add_argument(
        "--location", required=True,
        help="qdrant: :memory:, a folder or an http(s):// URL; chroma: a folder or http(s)://host:port",
    )
    group.add_argument("--collection", required=True, help="collection name")
    group.add_argument("--api-key", default=None, help="server API key (default: $QDRANT_API_KEY or $CHROMA_API_KEY)")


def _open_index(args: argparse.Namespace, index_fields: Sequence[str] = ()) -> DocumentIndex:
    settings = settings_from_args(args)
    chunk_tokens = getattr(args, "chunk_tokens", None)
    return DocumentIndex.open(
        args.store, args.location, args.collection, encoder=JinaEncoder.from_settings(settings), api_key=_api_key(args),
        index_fields=index_fields, batch_tokens=settings.batch_tokens, mode=args.mode,
        chunk_tokens=DEFAULT_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens,
    )


def _api_key(args: argparse.Namespace) -> str | None:
    return args.api_key or os.environ.get("QDRANT_API_KEY" if args.store == "qdrant" else "CHROMA_API_KEY")


def cmd_index(args: argparse.Namespace) -> int:
    if not args.paths and not args.records:
        raise InvalidInputError("nothing to index: give PATH arguments (files or folders) or --records FILE.jsonl")
    suffixes = {s if s.startswith(".") else f".{s}" for s in args.suffix} if args.suffix else None
    if args.engine == "ray":
        if args.sync:
            raise InvalidInputError("--sync needs the local engine: run it without --engine ray (unchanged documents are skipped)")
        if args.parallel is not None:
            raise InvalidInputError("--parallel spreads the local engine over processes; with --engine ray use --workers")
        return _index_with_ray(args, suffixes)
    if args.address or args.workers or args.cpus_per_worker:
        raise InvalidInputError("--address, --workers and --cpus-per-worker apply to --engine ray")
    if any(Path(records).suffix.lower() == ".parquet" or Path(records).is_dir() for records in args.records or []):
        raise InvalidInputError("Parquet files and folders of records need --engine ray; the local engine reads JSON Lines files")
    unread: list[str] = []  # files skipped in the folders: --sync must not take them for deleted ones
    documents = list(read_documents(args.paths, root=args.root, skipped=unread, **({"suffixes": suffixes} if suffixes else {})))
    for records in args.records or []:
        documents.extend(read_records_file(records))
    if not documents:  # folders without files to read are refused as they are read
        raise InvalidInputError(f"nothing to index: {', '.join(args.records)} hold no records (one JSON object a line)")
    with _open_index(args, args.index_field or ()) as index:
        try:
            report = index.index(
                documents, batch_docs=args.batch_docs, retries=args.retries,
                show_progress=False if args.no_progress else None, sync=args.sync, unread_ids=unread,
                parallel=args.parallel,
            )
        except IndexingError as error:
            print(f"jina-rag index: error: {error}", file=sys.stderr)
            return 1
        finally:
            index.encoder.close()
    print(report.summary())
    return 0


def _index_with_ray(args: argparse.Namespace, suffixes: set[str] | None) -> int:
    from jina_rag.index.ray_data import index_with_ray

    report = index_with_ray(
        args.paths, records=args.records or (), root=args.root, **({"suffixes": suffixes} if suffixes else {}),
        store=args.store, location=args.location, collection=args.collection, api_key=_api_key(args),
        index_fields=args.index_field or (), settings=settings_from_args(args), mode=args.mode,
        chunk_tokens=DEFAULT_CHUNK_TOKENS if args.chunk_tokens is None else args.chunk_tokens,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker or 1.0,
        address=args.address, batch_docs=args.batch_docs, retries=args.retries,
        show_progress=False if args.no_progress else None,
    )
    print(report.summary())
    return 1 if report.failed else 0


def _parse_filter(items: Sequence[str]) -> dict[str, list[str | int]]:
    conditions: dict[str, list[str | int]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--filter {item!r}: use KEY=VALUE (repeat a key to match any of several values)")
        # Digits become integers so they match numeric metadata.
        conditions.setdefault(key, []).append(int(value) if value.lstrip("-").isdigit() else value)
    return conditions


def cmd_search(args: argparse.Namespace) -> int:
    with _open_index(args) as index:
        hits = index.search(args.query, limit=args.limit, filter=_parse_filter(args.filter or []))
    for rank, hit in enumerate(hits, start=1):
        if args.json:
            passage = dataclasses.asdict(hit.passage) if hit.passage else None
            print(json.dumps({"rank": rank, "id": hit.id, "score": hit.score, "metadata": hit.metadata, "text": hit.text, "passage": passage}))
        else:
            preview = " ".join(hit.text.split())[: args.preview]
            print(f"{rank:>3}  {hit.score:.4f}  {hit.id}\n     {preview}")
            if hit.passage:
                passage = " ".join(hit.passage.text.split())[: args.preview]
                print(f"     passage {hit.passage.index} [{hit.passage.start}:{hit.passage.end}] {hit.passage.score:.4f}: {passage}")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from jina_rag.onnx_export import OnnxExportError, export_onnx

    try:
        result = export_onnx(
            args.model, args.out_dir, dtype=args.dtype, quantize=args.quantize, optimize=args.optimize,
            exporter=args.exporter, show_progress=False if args.no_progress else None,
        )
    except OnnxExportError as error:
        print(f"jina-rag export-onnx: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {result.model_file} ({result.file_bytes / 1e6:.1f} MB; weights {result.weight_bytes / 1e6:.1f} MB)")
    print(f"exporter {result.exporter}, dtype {result.dtype}, quantization {result.quantization or 'none'}, optimized {result.optimized}")
    if result.fp32_matmuls:
        print(f"kept {result.fp32_matmuls} feed-forward MatMuls in fp32: this model's outputs drift with them in int8")
    if not math.isnan(result.min_cosine):  # NaN: fp16 files are not checked on the CPU provider
        print(f"checked against PyTorch: max |diff| {result.max_abs_diff:.2g}, min cosine {result.min_cosine:.6f}")
    print(f"use it: JinaEncoder.from_pretrained({str(args.out_dir)!r}, backend='onnx')")
    return 0


class _OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line (``jina-rag CMD: error: ...``, exit 2), like every other error here; --help shows usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="jina-rag", description="Jina Embeddings v2 for retrieval-augmented generation")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser("embed", help="embed texts or files into JSONL or .npy")
    embed.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed")
    embed.add_argument("--file", action="append", metavar="PATH", help="embed a whole file as one text (repeatable)")
    embed.add_argument("--lines", metavar="PATH", help="embed each non-empty line of a file")
    embed.add_argument("-o", "--output", metavar="PATH", help="write .npy or JSONL here (default: JSONL on stdout)")
    embed.add_argument("--parallel", type=_parallel, default=None, metavar="N|DEVICES", help=PARALLEL_HELP)
    add_encoder_arguments(embed, normalize=True)
    embed.set_defaults(run=cmd_embed)

    evaluate = commands.add_parser(
        "eval", help="retrieval quality on a BEIR or NarrativeQA folder: nDCG@10, Recall@10/100, MRR@10",
        description="Evaluate our model at several max_length values (texts cut there, as in the Jina v2 paper's "
        "NarrativeQA curve), sentence-transformers models for comparison (whole and chunked), and BM25.",
    )
    evaluate.add_argument("dataset", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/) or NarrativeQA folder (documents.csv, qaps.csv, tmp/)")
    evaluate.add_argument("--split", default="test", help="qrels split (BEIR) or set (NarrativeQA); default: test")
    evaluate.add_argument("--stories-dir", default=None, help="NarrativeQA: folder of <document_id>.content files (default: DATASET/tmp)")
    evaluate.add_argument("--max-lengths", type=_comma_ints, default=None, help="our model's max_length values (default: 512,2048,8192, or --max-length when given)")
    evaluate.add_argument("--no-jina", action="store_true", help="skip our model (baselines only)")
    evaluate.add_argument("--compare", action="append", metavar="ST_MODEL", help="a sentence-transformers model folder to compare with (repeatable)")
    evaluate.add_argument("--compare-max-lengths", type=_compare_lengths, default=[None, 512],
                          help="max_length values for --compare models; 'default' is the model's own (default: default,512)")
    evaluate.add_argument("--chunk-tokens", type=int, default=256, help="also run --compare models on chunks of this many tokens, best chunk scores the document (0: off)")
    evaluate.add_argument("--no-bm25", action="store_true", help="skip the BM25 baseline")
    evaluate.add_argument("--max-queries", type=int, default=None, help="evaluate a reproducible sample of this many queries")
    evaluate.add_argument("-o", "--output", metavar="PATH", help="also write the results as JSON")
    add_encoder_arguments(evaluate)
    # The paper's curve reads each document up to max_length and drops the rest.
    evaluate.set_defaults(run=cmd_eval, long_text="truncate", max_length=None)

    info = commands.add_parser("info", help="print the model's facts")
    add_encoder_arguments(info)
    info.set_defaults(run=cmd_info)

    index = commands.add_parser("index", help="index documents (whole, and late-chunked passages) into Qdrant or Chroma")
    index.add_argument("paths", nargs="*", metavar="PATH", help="text files or folders (id = path relative to the folder)")
    index.add_argument("--records", action="append", metavar="FILE.jsonl", help='JSON lines {"id", "text", "metadata"} (repeatable; with --engine ray also .parquet files and folders of record files)')
    index.add_argument("--root", default=None, help="make every id relative to this folder")
    index.add_argument("--suffix", action="append", metavar=".EXT", help="file types to read (repeatable; default: common text types)")
    index.add_argument("--batch-docs", type=int, default=32, help="documents per write batch (default: 32)")
    index.add_argument("--retries", type=int, default=3, help="retries per write batch (default: 3)")
    index.add_argument("--index-field", action="append", metavar="KEY", help="metadata key to give a payload index on a Qdrant server")
    index.add_argument(
        "--sync", action="store_true",
        help="also remove documents of the collection that are not among this run's files and records (files deleted "
        "from the folder), once every document landed, and print how many; without it nothing is removed. Refused, "
        "removing nothing, if a document fails, if no id matches the collection's (another folder or --root), or if a "
        "stored document's file was skipped this run (another type: add --suffix)",
    )
    index.add_argument(
        "--mode", choices=INDEX_MODES, default=None,
        help="document: one vector per document; late-chunks / both: passage vectors too, from one pass over the "
        "document; hybrid: passages and a BM25 sparse vector (default: the collection's; for a new one hybrid on Qdrant, document on Chroma)",
    )
    index.add_argument("--chunk-tokens", type=int, default=None, help=f"passage length in tokens, about (default: {DEFAULT_CHUNK_TOKENS})")
    engine = index.add_argument_group("engine")
    engine.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: this process (default); ray: a Ray cluster's workers, same modes and points (server stores, or a "
        "folder with --workers 1; --records may be .parquet or folders)",
    )
    engine.add_argument("--address", default=None, help="Ray cluster to join (auto, ray://HOST:PORT); default: start a local Ray")
    engine.add_argument("--workers", type=int, default=None, help="encoding workers (default: one per GPU, else as the CPUs allow)")
    engine.add_argument("--cpus-per-worker", type=float, default=None, help="CPU threads per CPU worker (default: 1)")
    engine.add_argument("--parallel", type=_parallel, default=None, metavar="N|DEVICES", help=PARALLEL_HELP + " (local engine)")
    add_store_arguments(index)
    add_encoder_arguments(index)
    index.set_defaults(run=cmd_index)

    search = commands.add_parser("search", help="search an indexed collection")
    search.add_argument("query", help="the query text")
    search.add_argument("--limit", type=int, default=5, help="results (default: 5)")
    search.add_argument("--filter", action="append", metavar="KEY=VALUE", help="metadata filter (repeatable; all keys must match)")
    search.add_argument("--json", action="store_true", help="print JSON lines")
    search.add_argument("--preview", type=int, default=200, help="characters of text to show (default: 200)")
    search.add_argument(
        "--mode", choices=INDEX_MODES, default=None,
        help="score documents by their whole vector (document), best passage (late-chunks), the better of both, or "
        "the fusion of those and BM25 (hybrid) (default: the collection's: hybrid, late-chunks or document)",
    )
    add_store_arguments(search)
    add_encoder_arguments(search)
    search.set_defaults(run=cmd_search)

    export = commands.add_parser("export-onnx", help="export a model to ONNX for ONNX Runtime (CPU or GPU)")
    export.add_argument("model", metavar="MODEL", help="model folder or hub id to export")
    export.add_argument("out_dir", metavar="OUT_DIR", help="folder to write model.onnx, config.json and the tokenizer to")
    export.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="fp16 is for the CUDA provider (default: fp32)")
    export.add_argument("--quantize", choices=("int8",), default=None, help="dynamic int8 quantisation, for CPU")
    export.add_argument("--optimize", action="store_true", help="fuse attention, LayerNorm and GELU for ONNX Runtime")
    export.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto", help="torch.onnx exporter (default: dynamo, TorchScript if it fails)")
    export.add_argument("--no-progress", action="store_true", help="hide progress bars")
    export.set_defaults(run=cmd_export_onnx)
    for command in commands.choices.values():  # -v after the command too; it adds to a -v before it
        command.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging (-vv for debug)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help (0) or a usage error (2, its line already printed)
        return exit.code if isinstance(exit.code, int) else 2
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    # The level on the handler too: libraries that set their own logger's level (bm25s sets DEBUG on
    # import) would otherwise print below it.
    handler = logging.StreamHandler()
    handler.setLevel(level)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[handler])
    try:
        return args.run(args)
    except (JinaRagError, ValueError, TypeError, OSError) as error:
        # One line saying what to do; the traceback is for -v.
        logger.info("the error below, in full:", exc_info=error)
        print(f"jina-rag {args.command}: error: {first_line(error)}", file=sys.stderr)
        return 2


def first_line(error: BaseException) -> str:
    """An error's message on one line (third-party messages may span many)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
