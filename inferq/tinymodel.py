"""A tiny randomly initialised causal LM, built on the spot with no download.

Tests use it to run the real `transformers` engine end to end, and the demo falls back to it when
the Hugging Face hub cannot be reached. Its output is noise: it has never been trained.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = (
    "the quick brown fox jumps over the lazy dog. a haiku about the ocean, a lighthouse and autumn "
    "leaves. write a short story title about mountain trains, city rain and desert stars. hello world."
)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_model(path: str | Path, *, layers: int = 2, width: int = 64, context: int = 512, seed: int = 0) -> Path:
    """Write a GPT-2-style model and a byte-level BPE tokenizer (with a chat template) to `path`;
    load it with `from_pretrained(path)`. Returns the path."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([CORPUS] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<eos>", bos_token="<eos>", model_max_length=context)
    tokenizer.chat_template = CHAT_TEMPLATE
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer.save_pretrained(path)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=context, n_embd=width, n_layer=layers, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path
