"""Make the tiny tokenizer and tiny Llama config the tests use (run once; outputs are committed).

    python tests/assets/make_tiny.py

The tokenizer is a 600-token byte-level BPE trained on the demo data, with ChatML
special tokens and a ChatML chat template; the model config is a 2-layer Llama with
hidden size 32. Tests build the model from the config with a fixed seed.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus() -> list[str]:
    texts = []
    for name in ("train.jsonl", "test.jsonl", "general.jsonl"):
        for line in (ROOT / "examples" / "demo" / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts += [m["content"] for m in row["messages"]]
    texts.append((ROOT / "examples" / "demo" / "handbook.md").read_text(encoding="utf-8"))
    return texts


def make_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>",
                                   bos_token="<|im_start|>", unk_token=None)
    fast.chat_template = CHATML
    fast.save_pretrained(out)


def make_config(out: Path, vocab_size: int) -> None:
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, initializer_range=0.2, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    cfg.save_pretrained(out)


if __name__ == "__main__":
    from transformers import AutoTokenizer

    make_tokenizer(HERE / "tiny-tokenizer")
    tok = AutoTokenizer.from_pretrained(HERE / "tiny-tokenizer")
    assert tok.convert_tokens_to_ids("<|im_end|>") == 3 and tok.pad_token_id == 0
    make_config(HERE / "tiny-llama", len(tok))
    print(f"tokenizer: {len(tok)} tokens; config written to {HERE / 'tiny-llama'}")
