"""Character-level tokenizer for the task ladder: one token per character, so every digit is its own token
and token edit distance is character edit distance.

Built with the `tokenizers` library and wrapped as a PreTrainedTokenizerFast, so a saved model directory loads
with AutoTokenizer like any other model in the workflow.
"""

from __future__ import annotations

from lmcal.emergence.tasks import task_charset

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"


def build_char_tokenizer(charset: str | None = None):
    """PreTrainedTokenizerFast with ids 0..2 = PAD, EOS, UNK and then one id per character of ``charset``.

    ``charset`` defaults to ``lmcal.emergence.tasks.task_charset()``; characters outside it map to UNK.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(task_charset() if charset is None else charset))
    if not chars:
        raise ValueError("charset must contain at least one character")
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK] + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Every character (newline included) is its own pre-token; Fuse joins them back without spaces.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)
