"""The embedded model's tokenizer: byte-level BPE trained with HF `tokenizers`.

Newlines are split out as tokens of their own before BPE runs, so no token ever spans
a line break. A prompt that ends with a newline therefore always tokenises to a prefix
of prompt + completion (TRL checks exactly this; a merged "\\n    " token broke it in an
earlier prototype), and training sees the same context as inference.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOS, PAD)
# Pre-tokens: a newline; a Python keyword or a run of operators/punctuation, each with
# at most one space on either side (" in ", " = ", ", "); a run of spaces/tabs; an
# identifier; a number. An identifier never carries a space, so a parameter name is the
# same token after "(" in the signature as after " in " in the body: copying it into the
# code is an identity copy, which a two-layer model learns quickly (with GPT-2-style
# " name" tokens it guessed names instead). Code stays as short as with GPT-2's rule.
_KEYWORDS = (
    "for|in|if|return|def|not|and|or|elif|else|while|is|lambda|import|from|with|as|yield|assert"
    "|raise|del|class|try|except|finally|break|continue|pass|None|True|False|nonlocal|global"
)
PRE_TOKEN_PATTERN = (
    r"\n| ?(?:" + _KEYWORDS + r")\b ?| ?[^\sA-Za-z0-9_]+ ?|[ \t]+|[A-Za-z_][A-Za-z0-9_]*|[0-9]+"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE on `texts` and wrap it as a transformers fast tokenizer.

    Deterministic for the same texts in the same order.
    """
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRE_TOKEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        bos_token=None,
        unk_token=None,
        model_max_length=2048,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return hf
