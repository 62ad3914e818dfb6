"""Tiny randomly initialised causal LMs, built on the spot with no download.

Tests use them to run the real engines end to end (GPT-2 style for `transformers`, Llama style for
vLLM), and the demo falls back to one when the Hugging Face hub cannot be reached. Their output is
noise: they have never been trained.
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


def _byte_level_bpe(vocab_size: int, special_tokens: list[str]):
    """A byte-level BPE tokenizer trained on CORPUS: any text encodes, nothing is downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([CORPUS] * 4, trainer)
    return bpe


def _save_tokenizer(tokenizer, path: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer.save_pretrained(path)


def build_tiny_model(path: str | Path, *, layers: int = 2, width: int = 64, context: int = 512, seed: int = 0) -> Path:
    """Write a GPT-2-style model and a byte-level BPE tokenizer (with a chat template) to `path`;
    load it with `from_pretrained(path)`. Returns the path."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = _byte_level_bpe(400, ["<unk>", "<pad>", "<eos>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<eos>",
        model_max_length=context,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    _save_tokenizer(tokenizer, path)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=context,
        n_embd=width,
        n_layer=layers,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


# A Llama-3-style template: it writes the BOS token itself, so a tokenizer that also adds special
# tokens would give two of them (the mistake an engine must not make).
LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start|>{{ m['role'] }}<|sep|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant<|sep|>{% endif %}"
)
LLAMA_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|start|>", "<|sep|>", "<|end|>"]


def build_tiny_llama(path: str | Path, *, layers: int = 2, context: int = 256, seed: int = 0) -> Path:
    """Write a Llama-style model vLLM's CPU backend can run (head_dim 64: hidden 128, 2 heads, one
    KV head) and a byte-level BPE tokenizer that adds BOS like Llama's, with a chat template.
    Returns the path."""
    import torch
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = _byte_level_bpe(512, LLAMA_SPECIAL_TOKENS)
    bos_id = bpe.token_to_id("<s>")
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        model_max_length=context,
    )
    tokenizer.chat_template = LLAMA_CHAT_TEMPLATE
    _save_tokenizer(tokenizer, path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=context,
        bos_token_id=bos_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # transformers 5 names it `dtype` and still takes `torch_dtype`; older releases take only this
        torch_dtype="bfloat16",  # type: ignore[call-arg]
    )
    torch.manual_seed(seed)
    # transformers types `to` as taking the model itself (its decorator's signature)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)  # type: ignore[arg-type]
    return path
