"""The tiny chat models of docs/chat.md and the tests: random-init, seeded Qwen2s with a byte-level BPE tokenizer
trained here on a few chat sentences, with a ChatML or Llama 3 chat template (or none). Nothing is downloaded.

    python scripts/make_chat_models.py DIR    # DIR/tiny-chat (ChatML), DIR/tiny-plain (no template),
                                              # DIR/tiny-instruct (ChatML, with suggested sampling settings)

Their replies are noise (the weights are random): they are for seeing the chat machinery work, not for chatting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHAT_TEXT = ("You are a helpful assistant. Hello, how are you today? I am well, thank you. "
             "What is the capital of France? Paris is the capital of France.\n") * 4
SUGGESTED = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}


def build_chat_model(path: Path | str, style: str = "chatml", suggested: dict | None = None, seed: int = 0,
                     context: int = 256):
    """A random-init Qwen2 with a trained tokenizer and a chat template ("chatml", "llama3" or "none")."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = {"chatml": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                           "<|eot_id|>"],
                "none": ["<|endoftext|>"]}[style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CHAT_TEXT], trainer=trainer)
    bos, eos = (specials[0], specials[1]) if style == "llama3" else (None, specials[0])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                        additional_special_tokens=specials[1:] if style != "llama3" else specials[2:])
    if style != "none":
        tokenizer.chat_template = CHATML if style == "chatml" else LLAMA3
    torch.manual_seed(seed)
    eos_id = tokenizer.convert_tokens_to_ids(eos)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=context,
                         tie_word_embeddings=True, eos_token_id=eos_id, bos_token_id=eos_id)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=eos_id, **(suggested or {}),
                                               do_sample=bool(suggested))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where the three model folders go")
    args = parser.parse_args(argv)
    build_chat_model(args.folder / "tiny-chat", "chatml")
    build_chat_model(args.folder / "tiny-plain", "none")
    build_chat_model(args.folder / "tiny-instruct", "chatml", suggested=SUGGESTED)
    print(f"tiny-chat, tiny-plain and tiny-instruct in {args.folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
