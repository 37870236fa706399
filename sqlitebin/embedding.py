"""Text embedders: turn a list of strings into one float32 vector per string.

The default embedder is WordLlama ``l2_supercat``, a static token-embedding model: a text's vector is the mean of its
tokens' vectors, L2-normalised. It is loaded only from the tokenizer and weights files that ship inside the installed
``wordllama`` package, so it never touches the network; the files are read when the first embedder is made and kept
for the life of the process. Any other callable ``list[str] -> array`` can stand in for it: ``embed_texts()`` feeds
such a callable in length-sorted batches and checks what it returns, ``resolve_embedder()`` turns a name such as
``"wordllama-128"`` into an embedder, and ``embedder_name()`` gives the name to record beside the vectors it made.

Named embedders are ``"prefix:argument"`` strings: ``"model2vec:/path/to/model"`` is a Model2Vec static model read
from local files, and ``register_embedder(prefix, factory)`` adds other prefixes. A collection records the name, so
reopening it makes the same embedder again.
"""

import functools
import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

WORDLLAMA_CONFIG = "l2_supercat"
# The l2_supercat weights were trained Matryoshka-style, so the first 64 or 128 columns are themselves an embedding.
WORDLLAMA_DIMS = (64, 128, 256)


class WordLlamaEmbedder:
    """WordLlama ``l2_supercat`` embeddings of ``dim`` columns (64, 128 or 256), loaded from the installed package.

    Calling it with a list of strings returns a float32 array of shape ``(len(texts), dim)`` whose rows have unit
    L2 norm; a text with no tokens (such as ``""``) gets a row of zeros. ``batch_size`` (default 1024) is how many
    texts are tokenized at once, which bounds the memory one call holds.

    Raises ValueError for an unsupported ``dim`` or ``batch_size``, ModuleNotFoundError when wordllama is not
    installed, and FileNotFoundError when its package lacks the tokenizer or weights file.
    """

    def __init__(self, dim: int = 256, batch_size: int = 1024):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim not in WORDLLAMA_DIMS:
            raise ValueError(f"WordLlamaEmbedder(): dim must be one of 64, 128 or 256, got {dim!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"WordLlamaEmbedder(): batch_size must be a positive integer, got {batch_size!r}")
        # Load now, so a missing package or file shows up at construction rather than at the first call.
        self._tokenizer, self._weights = _load_wordllama(int(dim))
        self.name = f"wordllama-{WORDLLAMA_CONFIG}"
        self.version = importlib.metadata.version("wordllama")
        self.dim = int(dim)
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"WordLlamaEmbedder(dim={self.dim}, batch_size={self.batch_size})"

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("WordLlamaEmbedder(): texts must be a list of strings, got a single str")
        texts = list(texts)
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(
                    f"WordLlamaEmbedder(): texts must be strings, item {position} is {type(text).__name__}"
                )
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        short = [row for row, text in enumerate(texts) if len(text) <= WINDOW_CHARACTERS]
        for start in range(0, len(short), self.batch_size):
            rows = short[start : start + self.batch_size]
            # Same tokenization as WordLlamaInference.embed(): no special tokens, no truncation.
            encodings = self._tokenizer.encode_batch([texts[row] for row in rows], add_special_tokens=False)
            # Pooling each text on its own, rather than padding the batch to its longest text as WordLlama does,
            # keeps memory in proportion to the tokens actually present and is about twice as fast here.
            for row, encoding in zip(rows, encodings):
                if encoding.ids:
                    vectors[row] = self._weights[encoding.ids].mean(axis=0)
        for row, text in enumerate(texts):
            if len(text) > WINDOW_CHARACTERS:
                vectors[row] = self._long_text_mean(text)
        # WordLlama's own norm=True divides by zero for token-less texts and returns NaN; such rows stay zero here.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return vectors

    def _long_text_mean(self, text: str) -> np.ndarray:
        """The mean token vector of a long text, in memory that does not grow with the text.

        The text is tokenized a window at a time and only a count per vocabulary entry is kept, so the cost is
        linear in the text and the memory is one window plus the counts; the mean is counts x weights / tokens.
        """
        counts = np.zeros(self._weights.shape[0], dtype=np.int64)
        for windows in _batches(text_windows(text), WINDOW_BATCH):
            for encoding in self._tokenizer.encode_batch(windows, add_special_tokens=False):
                if encoding.ids:
                    counts += np.bincount(np.asarray(encoding.ids, dtype=np.int64), minlength=len(counts))
        tokens = int(counts.sum())
        if tokens == 0:
            return np.zeros(self.dim, dtype=np.float32)
        total = np.zeros(self.dim, dtype=np.float64)
        used = np.flatnonzero(counts)
        for start in range(0, len(used), WEIGHT_ROWS):  # in blocks, so no copy of the whole weights table is made
            rows = used[start : start + WEIGHT_ROWS]
            total += counts[rows].astype(np.float64) @ self._weights[rows].astype(np.float64)
        return (total / tokens).astype(np.float32)


# Texts longer than this many characters are tokenized in windows of about this size (see text_windows()).
WINDOW_CHARACTERS = 1 << 16
WEIGHT_ROWS = 4096
WINDOW_BATCH = 16  # windows tokenized in one call (the tokenizer runs a batch on several threads)
# A window ends at a space with no space on either side: the WordLlama (Llama 2) tokenizer has no pre-tokenizer, but
# no token in its vocabulary holds "▁" (the space) after another character, so no token crosses such a space, and a
# window that starts after it is tokenized exactly as that part of the whole text (its normalizer prepends the "▁").
WINDOW_CUT = re.compile(r"(?<! ) (?! )")


def text_windows(text: str, size: int = WINDOW_CHARACTERS):
    """Yield consecutive pieces of ``text`` of at most about ``size`` characters whose WordLlama tokens, taken
    together, are the tokens of the whole text.

    Each piece after the first starts after a single space that ends the previous piece. A stretch of ``size``
    characters without such a space (text without spaces, such as Chinese or Japanese, or long runs of spaces) is
    cut where it reaches ``size``: only the tokens at that cut can differ from tokenizing the whole text.
    """
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = None
        # The last single space in the second half of the window, so windows stay at least half full.
        # (endpos is one past the window so the lookahead sees the character after its last one)
        for match in WINDOW_CUT.finditer(text, start + size // 2, end + 1):
            cut = match.start()
        if cut is None:
            yield text[start:end]
            start = end
        else:
            yield text[start:cut]
            start = cut + 1
    yield text[start:]


def _batches(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _wordllama_package_dir() -> Optional[Path]:
    # find_spec locates the package without running its __init__, which imports requests and calls
    # logging.basicConfig(); only the package's data files are needed here.
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=None)
def _load_wordllama_files():
    """Read the l2_supercat tokenizer and full 256-column weights (as float32) from the installed wordllama."""
    package_dir = _wordllama_package_dir()
    if package_dir is None:
        raise ModuleNotFoundError(
            "WordLlamaEmbedder(): the wordllama package is not installed (pip install wordllama)"
        )
    # WordLlama.load() looks for the tokenizer under tokenizer/ while the package ships it under tokenizers/, and
    # then falls back to a download; naming both files directly keeps loading offline.
    tokenizer_path = package_dir / "tokenizers" / f"{WORDLLAMA_CONFIG}_tokenizer_config.json"
    weights_path = package_dir / "weights" / f"{WORDLLAMA_CONFIG}_256.safetensors"
    for path in (tokenizer_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"WordLlamaEmbedder(): the installed wordllama package has no {path}")

    from safetensors import safe_open
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    with safe_open(str(weights_path), framework="np") as weights_file:
        weights = weights_file.get_tensor("embedding.weight").astype(np.float32)
    if tokenizer.get_vocab_size(with_added_tokens=True) > weights.shape[0]:
        raise ValueError(
            f"WordLlamaEmbedder(): tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} tokens "
            f"but {weights_path.name} has only {weights.shape[0]} rows"
        )
    return tokenizer, weights


@functools.lru_cache(maxsize=None)
def _load_wordllama(dim: int):
    tokenizer, weights = _load_wordllama_files()
    # A contiguous copy of the first dim columns: gathering rows from a strided view is markedly slower.
    return tokenizer, np.ascontiguousarray(weights[:, :dim])


def embed_texts(
    embed: Callable[[list], np.ndarray],
    texts: Sequence[str],
    batch_size: int = 512,
    progress: Optional[Callable[[int, int], None]] = None,
) -> np.ndarray:
    """Embed ``texts`` with ``embed`` in batches of ``batch_size`` (default 512); return float32 rows in input order.

    Texts are sent shortest first, because embedders that pad a batch to its longest text waste less work on
    batches of similar lengths. ``progress(done, total)`` is called after each batch. Every batch's result must be
    a 2-D floating-point array with one finite row per text and the same width throughout; otherwise ValueError
    names the embedder and the shapes. For an empty ``texts`` the result has 0 rows and ``embed.dim`` columns
    (0 when the embedder has no ``dim``). Rows are returned as the embedder made them, not normalised again.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"embed_texts(): batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(texts, str):
        raise TypeError("embed_texts(): texts must be a list of strings, got a single str")
    texts = list(texts)
    total = len(texts)
    if total == 0:
        return np.zeros((0, getattr(embed, "dim", 0)), dtype=np.float32)

    name = embedder_name(embed)
    order = np.argsort(np.fromiter((len(text) for text in texts), dtype=np.int64, count=total), kind="stable")
    result = None
    for start in range(0, total, batch_size):
        positions = order[start : start + batch_size]
        batch = [texts[position] for position in positions]
        vectors = np.asarray(embed(batch))
        if vectors.ndim != 2 or vectors.shape[0] != len(batch):
            raise ValueError(
                f"embed_texts(): embedder {name} returned shape {vectors.shape} for {len(batch)} texts, "
                f"expected ({len(batch)}, dim)"
            )
        if not np.issubdtype(vectors.dtype, np.floating):
            raise ValueError(f"embed_texts(): embedder {name} returned {vectors.dtype} values, expected floats")
        if result is None:
            result = np.empty((total, vectors.shape[1]), dtype=np.float32)
        elif vectors.shape[1] != result.shape[1]:
            raise ValueError(
                f"embed_texts(): embedder {name} returned {vectors.shape[1]} columns for one batch "
                f"after {result.shape[1]} for earlier ones"
            )
        finite_rows = np.isfinite(vectors).all(axis=1)
        if not finite_rows.all():
            bad_rows = np.flatnonzero(~finite_rows)
            raise ValueError(
                f"embed_texts(): embedder {name} returned NaN or infinite values for {len(bad_rows)} of "
                f"{len(batch)} texts (first: text {positions[bad_rows[0]]}, {batch[bad_rows[0]][:60]!r})"
            )
        result[positions] = vectors
        if progress is not None:
            progress(min(start + batch_size, total), total)
    return result


def _wordllama_names() -> dict:
    names = {"wordllama": 256, f"wordllama-{WORDLLAMA_CONFIG}": 256}
    for dim in WORDLLAMA_DIMS:
        names[f"wordllama-{dim}"] = dim
        names[f"wordllama-{WORDLLAMA_CONFIG}-{dim}"] = dim
    return names


def resolve_embedder(spec) -> Callable[[list], np.ndarray]:
    """Return the embedder ``spec`` names, or ``spec`` itself when it is already a callable.

    Names: ``"wordllama"`` (256 columns) and ``"wordllama-64"``, ``"wordllama-128"``, ``"wordllama-256"``; the
    recorded name ``"wordllama-l2_supercat"`` (optionally with ``-64``/``-128``/``-256``) is accepted too; and
    ``"prefix:argument"`` for a registered prefix (``"model2vec:PATH"`` built in, see ``register_embedder()``).
    Anything else raises ValueError listing the accepted names.
    """
    if isinstance(spec, str):
        dims_by_name = _wordllama_names()
        if spec in dims_by_name:
            return WordLlamaEmbedder(dims_by_name[spec])
        prefix = named_embedder_prefix(spec)
        if prefix is not None:
            return _make_named_embedder(prefix, spec)
        raise ValueError(
            f"resolve_embedder(): unknown embedder {spec!r}; use one of {', '.join(sorted(dims_by_name))}, "
            f"a name starting with {', '.join(p + ':' for p in sorted(_FACTORIES))} or a callable"
        )
    if callable(spec):
        return spec
    raise ValueError(
        f"resolve_embedder(): expected an embedder name or a callable list[str] -> array, "
        f"got {type(spec).__name__}"
    )


def embedder_name(embed) -> str:
    """A name to record for ``embed``: its ``name`` attribute when it has one, else ``module.qualname``."""
    name = getattr(embed, "name", None)
    if isinstance(name, str) and name:
        return name
    named = embed if hasattr(embed, "__qualname__") else type(embed)
    return f"{named.__module__}.{named.__qualname__}"


# ----------------------------------------------------------------------
# Named embedders: "prefix:argument"

_FACTORIES = {}
PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9_.-]*")


def register_embedder(prefix: str, factory: Callable[[str], Callable], *, replace: bool = False) -> None:
    """Make ``embedder="prefix:argument"`` mean ``factory(argument)``, in this process.

    ``factory`` takes the text after the colon and returns an embedder: a callable ``list[str] -> (n, dim)``
    float array, best with ``dim`` and ``version`` attributes (recorded with the collection). The collection
    records the embedder's ``name`` when it starts with ``"prefix:"`` (so a factory can record a canonical
    form, such as an absolute path), else the name as given; ``Database.collection()`` calls the factory
    again with it, so register the prefix before reopening. ``prefix`` is lower-case letters, digits and
    ``_.-``, starting with a letter; registering a taken prefix raises ValueError unless ``replace=True``.
    """
    if not isinstance(prefix, str) or not PREFIX_PATTERN.fullmatch(prefix) or prefix.startswith("wordllama"):
        raise ValueError(
            f"register_embedder(): prefix must be lower-case letters, digits and _.- starting with a letter "
            f"(and not wordllama), got {prefix!r}")
    if not callable(factory):
        raise TypeError(f"register_embedder(): factory must be callable, got {type(factory).__name__}")
    if prefix in _FACTORIES and not replace:
        raise ValueError(f"register_embedder(): prefix {prefix!r} is already registered; pass replace=True")
    _FACTORIES[prefix] = factory


def named_embedder_prefix(name) -> Optional[str]:
    """The registered prefix of a ``"prefix:argument"`` name, or None."""
    if not isinstance(name, str) or ":" not in name:
        return None
    prefix = name.split(":", 1)[0]
    return prefix if prefix in _FACTORIES else None


class _NamedEmbedder:
    """A factory's embedder that cannot carry a ``name`` attribute itself (a bound method, say)."""

    def __init__(self, name, embed):
        self.name = name
        self.embed = embed
        for attribute in ("dim", "version"):
            if hasattr(embed, attribute):
                setattr(self, attribute, getattr(embed, attribute))

    def __call__(self, texts):
        return self.embed(texts)


def _make_named_embedder(prefix, spec):
    argument = spec.split(":", 1)[1]
    if not argument:
        raise ValueError(f"resolve_embedder(): embedder {spec!r} names no model after {prefix + ':'!r}")
    embed = _FACTORIES[prefix](argument)
    if not callable(embed):
        raise TypeError(f"resolve_embedder(): the factory for {prefix!r} returned {type(embed).__name__}, not a callable")
    name = getattr(embed, "name", None)
    if isinstance(name, str) and name.startswith(prefix + ":"):
        return embed
    try:
        embed.name = spec
    except (AttributeError, TypeError):
        embed = _NamedEmbedder(spec, embed)
    return embed


MODEL2VEC_FILES = ("config.json", "model.safetensors", "tokenizer.json")


class Model2VecEmbedder:
    """A Model2Vec static model (``model2vec`` package) read from a local directory, never from the network.

    ``path`` is a directory written by ``StaticModel.save_pretrained()`` (config.json, model.safetensors,
    tokenizer.json). Calling it with a list of strings returns float32 rows of unit L2 norm (a text with no
    known token gets zeros). The recorded name is ``"model2vec:<absolute path>"``; the version is the
    model2vec package's. Raises FileNotFoundError for a missing directory or file, ModuleNotFoundError when
    model2vec is not installed.
    """

    def __init__(self, path):
        directory = Path(path).expanduser().resolve()
        missing = [name for name in MODEL2VEC_FILES if not (directory / name).is_file()]
        if missing:
            what = "no directory" if not directory.is_dir() else f"no {', '.join(missing)} in the directory"
            raise FileNotFoundError(
                f"Model2VecEmbedder(): {what} {str(directory)!r}; a Model2Vec model is loaded from a local "
                "directory written by StaticModel.save_pretrained(), never downloaded")
        if importlib.util.find_spec("model2vec") is None:
            raise ModuleNotFoundError(
                "Model2VecEmbedder(): the model2vec package is not installed (pip install 'sqlitebin[model2vec]')")
        from model2vec import StaticModel

        # A directory that exists is always read locally; the hub is only tried for names that are not paths.
        self._model = StaticModel.from_pretrained(str(directory))
        self.name = f"model2vec:{directory}"
        self.version = importlib.metadata.version("model2vec")
        self.dim = int(self._model.dim)
        self.path = directory

    def __repr__(self) -> str:
        return f"Model2VecEmbedder({str(self.path)!r})"

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("Model2VecEmbedder(): texts must be a list of strings, got a single str")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self._model.encode(texts, normalize=False, use_multiprocessing=False,
                                                show_progress_bar=False), dtype=np.float32).reshape(len(texts), self.dim)
        # Normalised here rather than by model2vec, which adds 1e-32 to every norm: token-less rows stay exactly zero.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return vectors


register_embedder("model2vec", Model2VecEmbedder)
