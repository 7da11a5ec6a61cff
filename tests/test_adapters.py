"""LangChain, LlamaIndex and Chroma adapters on real frameworks and stores (random-weight tiny model).

With random weights only exact-duplicate queries can be asserted to rank their text first.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

# Optional extras: where one is missing (the GPU machine has none), the module is skipped, not an
# error that stops collection, so `pytest -m gpu` runs there.
for extra in ("langchain_core", "langchain_tests", "llama_index.core", "chromadb", "qdrant_client"):
    pytest.importorskip(extra)

from langchain_tests.integration_tests import EmbeddingsIntegrationTests, RetrieversIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402

from jina_rag import JinaEncoder, ModelNotFoundError  # noqa: E402
from jina_rag.chroma_embedding import JinaEmbeddingFunction  # noqa: E402
from jina_rag.index import Document, DocumentIndex, point_id  # noqa: E402
from jina_rag.index.qdrant import QdrantStore  # noqa: E402
from jina_rag.langchain import JinaEmbeddings, JinaRetriever  # noqa: E402
from jina_rag.llama_index import JinaEmbedding, JinaNodeRetriever  # noqa: E402

TEXTS = [
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "The central bank raised interest rates to slow inflation.",
    "A sonnet has fourteen lines and a fixed rhyme scheme.",
    "Glaciers carve U-shaped valleys as they grind downhill.",
]
SMALL = {"device": "cpu", "max_length": 128}


@pytest.fixture
def default_model(monkeypatch, checkpoint):
    """Make the test checkpoint the default model, as ``$JINA_RAG_MODEL`` does for users."""
    monkeypatch.setenv("JINA_RAG_MODEL", str(checkpoint))


@pytest.fixture
def embeddings(checkpoint) -> JinaEmbeddings:
    return JinaEmbeddings(model_name=str(checkpoint), **SMALL)


# -- LangChain's standard suites -------------------------------------------------------------------


@pytest.mark.usefixtures("default_model")
class TestJinaEmbeddingsStandardUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[JinaEmbeddings]:
        return JinaEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {}  # no arguments: the default model


@pytest.mark.usefixtures("default_model")
class TestJinaEmbeddingsStandardIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[JinaEmbeddings]:
        return JinaEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return SMALL


# -- LangChain adapter -------------------------------------------------------------------------------


def test_langchain_vectors_equal_the_encoders_and_options_apply(embeddings, encoder, checkpoint):
    vectors = np.array(embeddings.embed_documents(TEXTS))
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[1]), vectors[1], atol=1e-6)
    raw = JinaEmbeddings(model_name=str(checkpoint), normalize=False, batch_tokens=64, **SMALL)
    np.testing.assert_allclose(raw.embed_documents(TEXTS), encoder.encode(TEXTS, normalize=False), atol=1e-5)
    assert abs(np.linalg.norm(raw.embed_query(TEXTS[0])) - 1) > 1e-3
    long_text = "tidal energy and coastal engineering " * 100
    strict = JinaEmbeddings(model_name=str(checkpoint), long_text="error", **SMALL)
    with pytest.raises(ValueError, match="over max_length=128"):
        strict.embed_query(long_text)
    np.testing.assert_allclose(embeddings.embed_query(long_text), encoder.encode(long_text), atol=1e-5)


def test_adapters_naming_one_model_share_one_loaded_instance(checkpoint):
    models = [
        JinaEmbeddings(model_name=str(checkpoint), **SMALL),
        JinaEmbeddings(model_name=str(checkpoint), device="cpu", max_length=64),
        JinaEmbedding(model_name=str(checkpoint), **SMALL),
        JinaEmbeddingFunction(str(checkpoint), **SMALL),
    ]
    backends = {id(model.encoder.backend) for model in models}
    # The encoder a DocumentIndex uses is the same instance too.
    assert backends == {id(JinaEncoder.from_pretrained(checkpoint, **SMALL).backend)}


def test_missing_model_and_bad_options_are_clear_errors(tmp_path, checkpoint):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        JinaEmbeddings(model_name=str(tmp_path / "no-model"))
    with pytest.raises(ValueError, match="long_text"):
        JinaEmbeddings(model_name=str(checkpoint), long_text="chop")
    with pytest.raises(ValueError, match="extra"):
        JinaEmbeddings(model_name=str(checkpoint), max_lenght=512)


async def _ticks_while(coroutine) -> tuple[object, int]:
    """Run a coroutine beside a 5 ms ticker; the ticker only advances if the loop is free."""
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    result = await coroutine
    done.set()
    await task
    return result, ticks


def test_async_embedding_does_not_block_the_event_loop(embeddings):
    texts = [f"{text} " * 8 for text in TEXTS]
    while True:  # enough work to take 0.5 s on this machine
        started = time.perf_counter()
        embeddings.embed_documents(texts)
        if time.perf_counter() - started > 0.5:
            break
        texts *= 2
    vectors, ticks = asyncio.run(_ticks_while(embeddings.aembed_documents(texts)))
    np.testing.assert_allclose(vectors, embeddings.embed_documents(texts), atol=1e-5)
    # A blocked loop would tick about once; a free one ticks every few milliseconds.
    assert ticks >= 5
    query, _ = asyncio.run(_ticks_while(embeddings.aembed_query(TEXTS[2])))
    np.testing.assert_allclose(query, embeddings.embed_query(TEXTS[2]), atol=1e-6)


def test_langchain_qdrant_vector_store(embeddings, encoder, tmp_path):
    from langchain_qdrant import QdrantVectorStore

    store = QdrantVectorStore.from_texts(
        TEXTS, embeddings, metadatas=[{"n": i} for i in range(len(TEXTS))], location=":memory:", collection_name="lc"
    )
    for i, text in enumerate(TEXTS):
        top = store.similarity_search(text, k=1)[0]
        assert top.page_content == text and top.metadata["n"] == i
    # A collection written by DocumentIndex reads as a LangChain store as it is.
    index = DocumentIndex(QdrantStore.from_location(str(tmp_path / "q"), "whole"), encoder, mode="document")
    index.index([Document(f"doc{i}", text, {"n": i}) for i, text in enumerate(TEXTS)])
    retriever = QdrantVectorStore(index.store.client, "whole", embeddings).as_retriever(search_kwargs={"k": 1})
    top = retriever.invoke(TEXTS[3])[0]
    assert top.page_content == TEXTS[3] and top.metadata["n"] == 3 and top.metadata["_id"] == point_id("doc3")
    index.close()
    store.client.close()


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_langchain_chroma_vector_store(embeddings, tmp_path, request, mode):
    import chromadb
    from langchain_chroma import Chroma

    if mode == "embedded":
        client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    else:
        url = request.getfixturevalue("chroma_server").url
        client = chromadb.HttpClient(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]))
    store = Chroma(
        collection_name=f"lc-{mode}-{tmp_path.name[-8:]}".replace("_", "-"), embedding_function=embeddings,
        client=client, collection_configuration={"hnsw": {"space": "cosine"}},
    )
    store.add_texts(TEXTS, metadatas=[{"n": i} for i in range(len(TEXTS))])
    for i, text in enumerate(TEXTS):
        top, distance = store.similarity_search_with_score(text, k=1)[0]
        assert top.page_content == text and top.metadata["n"] == i and distance == pytest.approx(0.0, abs=1e-4)


# -- LlamaIndex adapter ------------------------------------------------------------------------------


@pytest.fixture
def llama_embedding(checkpoint) -> JinaEmbedding:
    return JinaEmbedding(model_name=str(checkpoint), embed_batch_size=3, **SMALL)


def test_llama_index_query_text_and_batch_sync_and_async(llama_embedding, encoder):
    expected = encoder.encode(TEXTS)
    np.testing.assert_allclose(llama_embedding.get_text_embedding_batch(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(llama_embedding.get_text_embedding(TEXTS[0]), expected[0], atol=1e-5)
    np.testing.assert_allclose(llama_embedding.get_query_embedding(TEXTS[1]), expected[1], atol=1e-5)

    async def run_async():
        return (
            await llama_embedding.aget_text_embedding_batch(TEXTS),
            await llama_embedding.aget_text_embedding(TEXTS[2]),
            await llama_embedding.aget_query_embedding(TEXTS[3]),
        )

    batch, text, query = asyncio.run(run_async())
    np.testing.assert_allclose(batch, expected, atol=1e-5)
    np.testing.assert_allclose(text, expected[2], atol=1e-5)
    np.testing.assert_allclose(query, expected[3], atol=1e-5)
    assert JinaEmbedding.class_name() == "JinaEmbedding" and llama_embedding.embed_batch_size == 3


@pytest.mark.parametrize("backend", ["qdrant", "chroma"])
def test_llama_index_vector_store_index_with_settings_embed_model(llama_embedding, tmp_path, backend):
    from llama_index.core import Document as LlamaDocument
    from llama_index.core import Settings, StorageContext, VectorStoreIndex

    if backend == "qdrant":
        from llama_index.vector_stores.qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient

        client = QdrantClient(location=":memory:")
        vector_store = QdrantVectorStore("li", client=client)
    else:
        import chromadb
        from llama_index.vector_stores.chroma import ChromaVectorStore

        client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
        vector_store = ChromaVectorStore(chroma_collection=client.get_or_create_collection("llama"))
    previous = Settings._embed_model
    Settings.embed_model = llama_embedding
    try:
        # No transformations: each document stays whole, one node and one vector.
        index = VectorStoreIndex.from_documents(
            [LlamaDocument(text=text, id_=f"doc{i}") for i, text in enumerate(TEXTS)],
            storage_context=StorageContext.from_defaults(vector_store=vector_store),
            transformations=[],
        )
        retriever = index.as_retriever(similarity_top_k=2)
        for i, text in enumerate(TEXTS):
            top = retriever.retrieve(text)[0]
            assert top.node.ref_doc_id == f"doc{i}" and top.node.get_content() == text
            assert top.score == pytest.approx(1.0, abs=1e-4)
    finally:
        Settings._embed_model = previous
        client.close()


# -- Chroma embedding function -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_chroma_collection_embeds_on_its_own_and_reopens_from_its_config(checkpoint, encoder, tmp_path, request, mode):
    import chromadb

    if mode == "embedded":
        def connect():
            return chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    else:
        port = int(request.getfixturevalue("chroma_server").url.rsplit(":", 1)[1])

        def connect():
            return chromadb.HttpClient(host="127.0.0.1", port=port)

    name = f"ef-{mode}-{tmp_path.name[-8:]}".replace("_", "-")
    function = JinaEmbeddingFunction(str(checkpoint), **SMALL)
    collection = connect().create_collection(name, embedding_function=function)
    assert collection.configuration_json["embedding_function"]["name"] == "jina_rag"
    assert collection.configuration_json["hnsw"]["space"] == "cosine"
    collection.add(ids=[f"t{i}" for i in range(len(TEXTS))], documents=TEXTS)
    stored = collection.get(ids=["t2"], include=["embeddings"])["embeddings"][0]
    np.testing.assert_allclose(stored, encoder.encode(TEXTS[2]), atol=1e-5)
    # A fresh client rebuilds the function from the stored config: no embedding_function passed.
    reopened = connect().get_collection(name)
    for i, text in enumerate(TEXTS):
        assert reopened.query(query_texts=[text], n_results=1)["ids"][0] == [f"t{i}"]
    assert JinaEmbeddingFunction.build_from_config(function.get_config()).get_config() == function.get_config()
    with pytest.raises(ValueError, match="model cannot change"):
        function.validate_config_update(function.get_config(), {"model_name": "another"})


def test_document_index_collection_queried_through_chroma_with_the_embedding_function(checkpoint, encoder, tmp_path):
    index = DocumentIndex.open("chroma", str(tmp_path / "chroma"), "whole", encoder=encoder)
    index.index([Document(f"doc{i}", text, {"n": i}) for i, text in enumerate(TEXTS)])
    collection = index.store.client.get_collection("whole", embedding_function=JinaEmbeddingFunction(str(checkpoint), **SMALL))
    found = collection.query(query_texts=[TEXTS[1]], n_results=1)
    assert found["documents"][0] == [TEXTS[1]] and found["metadatas"][0][0]["doc_id"] == "doc1"
    index.close()


# -- retrievers over the indexing core (late chunks) --------------------------------------------------

ARTICLES = {
    "photosynthesis": [TEXTS[0], "Chlorophyll absorbs red and blue light but reflects green.", "Leaves open their stomata at dawn."],
    "rates": [TEXTS[1], "Mortgage payments rose within a month.", "Savers finally earned interest again."],
    "sonnets": [TEXTS[2], "Shakespeare wrote one hundred and fifty four of them.", "The final couplet often turns the argument."],
    "glaciers": [TEXTS[3], "Meltwater deposits gravel in long ridges called eskers.", "Ice cores record ancient air."],
}


def sentence_spans(text: str) -> list[tuple[int, int]]:
    import re

    return [match.span() for match in re.finditer(r"[^.!?\s][^.!?]*[.!?]", text)]


@pytest.fixture(scope="module", params=["qdrant", "chroma"])
def late_index(request, checkpoint, tmp_path_factory):
    location = ":memory:" if request.param == "qdrant" else str(tmp_path_factory.mktemp("late") / "chroma")
    index = DocumentIndex.open(
        request.param, location, "late-retrievers", encoder=JinaEncoder.from_pretrained(checkpoint, **SMALL),
        mode="late-chunks", splitter=sentence_spans,
    )
    index.index([Document(name, " ".join(passages), {"n": n}) for n, (name, passages) in enumerate(ARTICLES.items())])
    yield index
    index.close()


class TestJinaRetrieverStandardIntegration(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _index(self, late_index) -> None:
        self.index = late_index

    @property
    def retriever_constructor(self) -> type[JinaRetriever]:
        return JinaRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"index": self.index}

    @property
    def retriever_query_example(self) -> str:
        return ARTICLES["sonnets"][1]


def test_langchain_retriever_returns_documents_with_the_matching_passage(late_index):
    retriever = JinaRetriever(index=late_index, k=2)
    for n, (name, passages) in enumerate(ARTICLES.items()):
        for number, passage in enumerate(passages):
            top = retriever.invoke(passage)[0]
            assert top.id == top.metadata["doc_id"] == name and top.metadata["n"] == n
            assert top.page_content == " ".join(passages)
            found = top.metadata["passage"]
            assert found["index"] == number and found["text"] == passage
            assert top.page_content[found["start"] : found["end"]] == passage
            assert top.metadata["score"] == pytest.approx(found["score"], abs=1e-4)
    filtered = retriever.invoke(ARTICLES["rates"][2], k=4, filter={"n": [2, 3]})
    assert sorted(doc.id for doc in filtered) == ["glaciers", "sonnets"]
    whole = retriever.invoke(ARTICLES["rates"][2], mode="document")[0]
    assert whole.metadata["passage"]["text"] == ARTICLES["rates"][2]
    assert whole.metadata["score"] != pytest.approx(whole.metadata["passage"]["score"], abs=1e-4)
    with pytest.raises(ValueError, match="greater than 0"):
        JinaRetriever(index=late_index, k=0)


def test_llama_index_retriever_returns_document_nodes_with_the_matching_passage(late_index):
    from llama_index.core.schema import MetadataMode

    retriever = JinaNodeRetriever(late_index, similarity_top_k=3)
    for name, passages in ARTICLES.items():
        for number, passage in enumerate(passages):
            top = retriever.retrieve(passage)[0]
            assert top.node.node_id == top.node.ref_doc_id == name and top.node.get_content() == " ".join(passages)
            assert top.node.metadata["passage"]["index"] == number and top.node.metadata["passage"]["text"] == passage
            assert top.score == pytest.approx(top.node.metadata["passage"]["score"], abs=1e-4)
    nodes = asyncio.run(retriever.aretrieve(ARTICLES["glaciers"][2]))
    assert len(nodes) == 3 and nodes[0].node.node_id == "glaciers"
    llm_text = nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert "n: 3" in llm_text and "passage" not in llm_text and "doc_id" not in llm_text
    filtered = JinaNodeRetriever(late_index, similarity_top_k=4, filter={"n": 0}).retrieve(ARTICLES["glaciers"][2])
    assert [node.node.node_id for node in filtered] == ["photosynthesis"]
