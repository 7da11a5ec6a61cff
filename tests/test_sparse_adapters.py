"""BM25 through the frameworks' own hybrid paths: langchain-qdrant's and LlamaIndex's Qdrant stores, in-memory.

The dense model has random weights, so the rankings asserted here rest on BM25: a query's words
occur in its target document alone, or the test is about the IDF.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

for extra in ("qdrant_client", "langchain_core", "llama_index.core"):  # skipped, not broken, where an extra is missing
    pytest.importorskip(extra)

from qdrant_client import QdrantClient, models  # noqa: E402

from jina_rag.langchain import JinaEmbeddings  # noqa: E402
from jina_rag.langchain_sparse import JinaBM25SparseEmbeddings  # noqa: E402
from jina_rag.llama_index import JinaBM25SparseFunctions, JinaEmbedding  # noqa: E402
from jina_rag.sparse import BM25SparseEncoder  # noqa: E402

SMALL = {"device": "cpu", "max_length": 128}
# "river" is in every document but the last, often; "glacier" only in the last, once. Without the
# IDF the repeated common word outscores the rare one.
TEXTS = [
    "The river floods the river valley; river barges carry grain down the river.",
    "A river delta forms where the river slows and drops its silt, river after river.",
    "Trout swim up the river; anglers wait by the river bank for the river trout.",
    "The river town taxes river trade, and the river ferry runs twice a day.",
    "A glacier carves a U-shaped valley as it grinds downhill.",
]
RARE, RARE_TARGET = "trout anglers", 2  # words of one document only
COMMON_AND_RARE, COMMON_AND_RARE_TARGET = "river glacier", 4


@pytest.fixture(scope="module")
def langchain_bm25() -> JinaBM25SparseEmbeddings:
    return JinaBM25SparseEmbeddings()


@pytest.fixture(scope="module")
def llama_bm25() -> JinaBM25SparseFunctions:
    return JinaBM25SparseFunctions()


# -- One tokenisation: both adapters pass the core encoder's vectors on -----------------------------------


def test_both_adapters_give_the_core_encoders_vectors(langchain_bm25, llama_bm25):
    core = BM25SparseEncoder()
    expected, expected_query = core.embed_documents(TEXTS), core.embed_query(COMMON_AND_RARE)
    llama_indices, llama_values = llama_bm25.doc_fn(TEXTS)
    for want, langchain, indices, values in zip(
        expected, langchain_bm25.embed_documents(TEXTS), llama_indices, llama_values, strict=True
    ):
        assert langchain.indices == indices == want.indices.tolist()
        np.testing.assert_array_equal(np.float32(langchain.values), want.values)
        np.testing.assert_array_equal(np.float32(values), want.values)
    langchain_query = langchain_bm25.embed_query(COMMON_AND_RARE)
    (query_indices,), (query_values,) = llama_bm25.query_fn([COMMON_AND_RARE])
    assert langchain_query.indices == query_indices == expected_query.indices.tolist()
    assert langchain_query.values == query_values == expected_query.values.tolist()


def test_both_adapters_take_the_encoder_handed_in():
    short = BM25SparseEncoder(avg_len=8.0)
    want = short.embed_documents(TEXTS[:1])[0].values.tolist()
    assert want != BM25SparseEncoder().embed_documents(TEXTS[:1])[0].values.tolist()
    assert JinaBM25SparseEmbeddings(short).embed_documents(TEXTS[:1])[0].values == want
    assert JinaBM25SparseFunctions(short).doc_fn(TEXTS[:1])[1] == [want]


def test_langchain_async_methods_match(langchain_bm25):
    async def run():
        return await langchain_bm25.aembed_documents(TEXTS), await langchain_bm25.aembed_query(RARE)

    documents, query = asyncio.run(run())
    assert documents == langchain_bm25.embed_documents(TEXTS) and query == langchain_bm25.embed_query(RARE)


def test_dense_langchain_adapter_imports_without_langchain_qdrant():
    # A fresh interpreter in which langchain_qdrant cannot be imported.
    script = (
        "import sys; sys.modules['langchain_qdrant'] = None\n"
        "from jina_rag.langchain import JinaEmbeddings\n"
        "try:\n    from jina_rag import JinaBM25SparseEmbeddings\n"
        "except ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert "pip install langchain-qdrant" in result.stdout


# -- LangChain: QdrantVectorStore(retrieval_mode=HYBRID, sparse_embedding=...) ----------------------------


@pytest.fixture(scope="module")
def langchain_store(checkpoint, langchain_bm25):
    from langchain_qdrant import QdrantVectorStore, RetrievalMode

    store = QdrantVectorStore.from_texts(
        TEXTS, JinaEmbeddings(model_name=str(checkpoint), **SMALL), location=":memory:", collection_name="lc",
        retrieval_mode=RetrievalMode.HYBRID, sparse_embedding=langchain_bm25,
        sparse_vector_params=langchain_bm25.sparse_vector_params,
    )
    yield store
    store.client.close()


@pytest.mark.parametrize("mode", ["hybrid", "sparse"])
def test_langchain_rare_term_ranks_its_document_first(langchain_store, mode):
    from langchain_qdrant import RetrievalMode

    langchain_store.retrieval_mode = RetrievalMode(mode)
    try:
        # k covers every document, so in HYBRID the dense prefetch cannot leave the target out of RRF.
        assert langchain_store.similarity_search(RARE, k=len(TEXTS))[0].page_content == TEXTS[RARE_TARGET]
    finally:
        langchain_store.retrieval_mode = RetrievalMode.HYBRID


@pytest.mark.parametrize("with_params", [True, False])
def test_langchain_applies_the_idf_only_with_sparse_vector_params(langchain_bm25, with_params):
    """langchain-qdrant creates the sparse vector without a modifier unless told."""
    from langchain_qdrant import QdrantVectorStore, RetrievalMode

    params = langchain_bm25.sparse_vector_params if with_params else None
    store = QdrantVectorStore.from_texts(
        TEXTS, location=":memory:", collection_name="lc-idf", retrieval_mode=RetrievalMode.SPARSE,
        sparse_embedding=langchain_bm25, sparse_vector_params=params,
    )
    try:
        sparse = store.client.get_collection("lc-idf").config.params.sparse_vectors[store.sparse_vector_name]
        assert sparse.modifier == (models.Modifier.IDF if with_params else None)
        top = store.similarity_search(COMMON_AND_RARE, k=1)[0]
        assert (top.page_content == TEXTS[COMMON_AND_RARE_TARGET]) == with_params
    finally:
        store.client.close()


# -- LlamaIndex: QdrantVectorStore(enable_hybrid=True, sparse_doc_fn=..., sparse_query_fn=...) --------------


@pytest.fixture(scope="module")
def llama_index(checkpoint, llama_bm25):
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    client = QdrantClient(location=":memory:")
    store = QdrantVectorStore("li", client=client, **llama_bm25.store_kwargs)
    # No transformations: each document stays whole, one node.
    index = VectorStoreIndex.from_documents(
        [Document(text=text, id_=f"doc{i}") for i, text in enumerate(TEXTS)],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=JinaEmbedding(model_name=str(checkpoint), **SMALL), transformations=[],
    )
    yield index
    client.close()


@pytest.mark.parametrize("mode", ["hybrid", "sparse"])
def test_llama_index_rare_term_ranks_its_document_first(llama_index, mode):
    retriever = llama_index.as_retriever(
        vector_store_query_mode=mode, similarity_top_k=len(TEXTS), sparse_top_k=len(TEXTS)
    )
    assert retriever.retrieve(RARE)[0].node.ref_doc_id == f"doc{RARE_TARGET}"
    store = llama_index.vector_store
    sparse = store.client.get_collection("li").config.params.sparse_vectors[store.sparse_vector_name]
    assert sparse.modifier == models.Modifier.IDF


@pytest.mark.parametrize("with_config", [True, False])
def test_llama_index_applies_the_idf_only_with_sparse_config(llama_bm25, with_config):
    """The store sets the IDF modifier on its own only for FastEmbed models it knows."""
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    kwargs = llama_bm25.store_kwargs if with_config else {**llama_bm25.store_kwargs, "sparse_config": None}
    client = QdrantClient(location=":memory:")
    try:
        store = QdrantVectorStore("li-idf", client=client, **kwargs)
        store.add([TextNode(text=text, embedding=[1.0, 0.0]) for text in TEXTS])  # dense vectors unused here
        sparse = client.get_collection("li-idf").config.params.sparse_vectors[store.sparse_vector_name]
        assert sparse.modifier == (models.Modifier.IDF if with_config else None)
        query = VectorStoreQuery(query_str=COMMON_AND_RARE, mode=VectorStoreQueryMode.SPARSE, sparse_top_k=1)
        top = store.query(query).nodes[0]
        assert (top.get_content() == TEXTS[COMMON_AND_RARE_TARGET]) == with_config
    finally:
        client.close()
