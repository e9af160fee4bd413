"""The torch backend: a transformers causal LM and its tokenizer in this process (a Hugging Face model
id, a local directory, or the bundled model), decoded through the lean GPT-2 forward where it is exact
and `model(...)` with a `DynamicCache` otherwise."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samplecli.backends.base import CHAT, REORDER, TEACHER_FORCE, VERIFY, Backend, inference_steps
from samplecli.backends.vocabulary import HFVocabulary
from samplecli.errors import SampleCliError, UsageError

if TYPE_CHECKING:
    import torch

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "bundled_model"
BUNDLED_MODEL_NAME = "bundled"  # what `--model` shows for the default
BUNDLED_DRAFT_DIR = Path(__file__).resolve().parent.parent / "bundled_draft"  # its draft (`--draft-model`)
# end-of-turn tokens of well-known chat templates, used where the template's own cannot be worked out
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|endofturn|>")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
PREFIX_ROWS = 512  # positions a piece of `logit_chunks` runs before its first scored one (no scores kept)
BODY_ROWS = 64  # positions a piece of `logit_chunks` runs through a lean forward's body at once (the head: `rows`)


class TorchBatch:
    """Rows of one prompt in the model's KV cache (the lean GPT-2 cache or transformers' DynamicCache)."""

    def __init__(self, forward: Any, cache: Any) -> None:
        self.forward, self.cache = forward, cache

    def advance(self, token_ids: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            out = self.forward(input_ids=token_ids[:, None], cache=self.cache, use_cache=True)
        return out.logits[:, -1, :].float()

    def reorder(self, parents: torch.Tensor) -> None:
        self.cache.reorder_cache(parents)

    def extend(self, token_ids: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            out = self.forward(input_ids=token_ids, cache=self.cache, use_cache=True)
        return out.logits.float()

    def rewind(self, count: int) -> None:
        self.cache.crop(self.cache.get_seq_length() - count)


@dataclass
class LM(Backend):
    """A loaded model and tokenizer as a backend: the facts the decode loop needs, and its verbs."""

    model: Any
    tokenizer: Any
    name: str
    device: torch.device
    capabilities: frozenset[str] = field(default=frozenset({REORDER, TEACHER_FORCE, CHAT, VERIFY}))
    top_n: int | None = None  # every token's logit
    end_of_turn_ids: tuple[int, ...] = ()  # the chat template's, once `chat` has been asked: they stop like EOS

    @classmethod
    def of(cls, model: Any, tokenizer: Any = None, name: str = "model") -> LM:
        """A backend over a model already in memory (its device is where its parameters are)."""
        return cls(model=model, tokenizer=tokenizer, name=name, device=next(model.parameters()).device)

    @cached_property
    def vocab(self) -> HFVocabulary:
        return HFVocabulary(self.tokenizer, self.vocab_size)

    def start(self, prompt_ids: list[int], rows: int = 1) -> tuple[TorchBatch, torch.Tensor]:
        import torch

        from samplecli.backends.lean import forward_for

        forward, cache = forward_for(self.model)
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = forward(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        if rows > 1:  # one prefill for the shared prompt, then the cache is repeated for every row
            cache.batch_repeat_interleave(rows)
            logits = logits.expand(rows, -1)
        return TorchBatch(forward, cache), logits

    def logits(self, ids: Sequence[int], keep: int = 0) -> torch.Tensor:
        import torch

        batch = torch.as_tensor(list(ids), dtype=torch.long, device=self.device)[None, :]
        with torch.inference_mode():
            out = self.model(input_ids=batch, logits_to_keep=keep) if keep else self.model(input_ids=batch)
        return out.logits[0]

    def local_chat_template(self) -> tuple[str, str, str] | None:
        template = getattr(self.tokenizer, "chat_template", None)
        if not isinstance(template, str):
            return None
        return template, self.tokenizer.bos_token or "", self.tokenizer.eos_token or ""

    @inference_steps
    def logit_chunks(self, ids: Sequence[int], first: int = 0, stop: int | None = None,
                     rows: int = 128) -> Iterator[torch.Tensor]:
        """`logits(ids)[first:stop]`, `rows` at a time, to float rounding: the model runs over `ids` a piece at a
        time through its KV cache (the forward that generation uses, head and any final soft-cap included), the
        positions before `first` in pieces of PREFIX_ROWS that keep no scores, so that only one piece's
        activations and `rows` x V scores exist at once: a window of thousands of positions at a 152k
        vocabulary needs megabytes, not its [n, V] scores or its whole [n, hidden] activations.

        Through a lean forward the body runs BODY_ROWS positions at a time and the output head `rows` of them at
        a time, as `head @ hidden.T` (each piece is then a transposed view): for a few rows MKL's `linear` reads
        the head far below the memory's speed on some CPUs (a 128k x 512 head, 32 rows: 95 ms as `linear`, 56 ms
        so), and small head pieces are what keeps `score`'s memory near the model's own."""
        import torch

        from samplecli.backends.kv_cache import LeanForward
        from samplecli.backends.lean import forward_for

        stop = len(ids) if stop is None else stop
        forward, cache = forward_for(self.model)
        hidden_states = forward.hidden_states if isinstance(forward, LeanForward) else None  # the body, no head
        tokens = torch.as_tensor(list(ids[:stop]), dtype=torch.long, device=self.device)[None, :]
        for begin in range(0, first, PREFIX_ROWS):
            prefix = tokens[:, begin:min(begin + PREFIX_ROWS, first)]
            if hidden_states is not None:
                hidden_states(prefix, cache, keep=1)
            else:
                forward(input_ids=prefix, cache=cache, use_cache=True, logits_to_keep=1)
        if hidden_states is None:  # the model's own forward, its head inside
            for begin in range(first, stop, rows):
                yield forward(input_ids=tokens[:, begin:min(begin + rows, stop)], cache=cache,
                              use_cache=True).logits[0]
            return
        weight, bias = forward.head
        for begin in range(first, stop, BODY_ROWS):
            hidden = hidden_states(tokens[:, begin:min(begin + BODY_ROWS, stop)], cache)[0]
            for row in range(0, hidden.shape[0], rows):
                scores = weight @ hidden[row:row + rows].T
                if bias is not None:
                    scores += bias[:, None]
                yield scores.T
                del scores  # let the piece go before the next is computed

    def chat(self, messages: Sequence[dict[str, str]], template: str | None = None) -> list[int]:
        """The prompt ids of `messages` through the chat template (the model's, or `template`), ending where the
        assistant's reply begins; the template's end-of-turn tokens then count as EOS."""
        template = template or getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise SampleCliError(f"model `{self.name}` has no chat template; give a plain prompt (without "
                                 "--chat, --system or --messages), or a template with --chat-template FILE")
        try:
            ids = self.tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=True,
                                                     add_generation_prompt=True, return_dict=False)
        except Exception as exc:  # jinja2's TemplateError, or the template's own raise_exception(...)
            raise SampleCliError(f"model `{self.name}`: the chat template fails on these messages: "
                                 f"{_one_line(exc)}") from exc
        self.end_of_turn_ids = tuple(self._end_of_turn(template))
        return list(ids)

    def _end_of_turn(self, template: str) -> list[int]:
        """The special tokens the template writes right after an assistant's message (`<|im_end|>`,
        `<|eot_id|>`), found by rendering a short conversation; well-known names where that fails."""
        marker = "\u2063samplecli-reply\u2063"
        special = set(self.tokenizer.all_special_ids) | {
            i for i, t in getattr(self.tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
        found: list[int] = []
        try:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
                chat_template=template, tokenize=False)
            after = text.split(marker, 1)[1] if marker in text else ""
            found = [i for i in self.tokenizer.encode(after, add_special_tokens=False) if i in special]
        except Exception:  # a template that refuses a conversation ending with the assistant
            found = []
        vocab = self.tokenizer.get_vocab()
        found += [vocab[name] for name in END_OF_TURN_TOKENS if name in vocab and name in template]
        return list(dict.fromkeys(found))

    @property
    def context_length(self) -> int | None:
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def eos_token_ids(self) -> list[int]:
        ids: list[int] = []
        for source in (getattr(self.model, "generation_config", None), self.model.config):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, int) and v not in ids:
                    ids.append(v)
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids + [i for i in self.end_of_turn_ids if i not in ids]

    @property
    def bos_token_id(self) -> int | None:
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        value = getattr(self.model.config, "bos_token_id", None)
        return value if isinstance(value, int) else None

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]


def check_names(device: str, dtype: str) -> None:
    """--device and --dtype name things torch knows (checked without importing torch, which takes seconds)."""
    if device not in DEVICES:
        raise UsageError(f"--device: unknown device `{device}`; valid: {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise UsageError(f"--dtype: unknown dtype `{dtype}`; valid: {', '.join(DTYPES)}")


def resolve_device(device: str) -> torch.device:
    import torch

    if device not in DEVICES:
        raise UsageError(f"--device: unknown device `{device}`; valid: {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: the MPS backend is not available on this machine")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> Any:
    import torch

    if dtype not in DTYPES:
        raise UsageError(f"--dtype: unknown dtype `{dtype}`; valid: {', '.join(DTYPES)}")
    if dtype == "auto":
        # float32 on the CPU (bfloat16 matmuls are slower than float32 on many CPUs for small models);
        # on accelerators, the dtype the checkpoint was saved in.
        return torch.float32 if device.type == "cpu" else "auto"
    return getattr(torch, dtype)


def load(name_or_path: str | None = None, device: str = "auto", dtype: str = "auto",
         trust_remote_code: bool = False, threads: int | None = None) -> LM:
    """Load a model for decoding. None means the bundled model, loaded offline.

    Raises SampleCliError with one line saying which model, why, and what to do.
    """
    check_names(device, dtype)
    if name_or_path is None or name_or_path == BUNDLED_MODEL_NAME:
        if not (BUNDLED_MODEL_DIR / "config.json").is_file():
            raise SampleCliError(
                f"the bundled model is missing from {BUNDLED_MODEL_DIR}; reinstall samplecli, or train it with "
                "`python scripts/train_default_model.py ../shared/data/tinyshakespeare.txt`, or pass --model"
            )
        os.environ["HF_HUB_OFFLINE"] = "1"
        path, display = str(BUNDLED_MODEL_DIR), BUNDLED_MODEL_NAME
    else:
        path, display = name_or_path, name_or_path
        local = Path(name_or_path).expanduser()
        if local.exists():
            if not (local / "config.json").is_file():
                raise SampleCliError(f"model `{display}`: {local} has no config.json, so it is not a model "
                                     "directory; pass a directory written by save_pretrained")
            path = str(local)
        elif _is_path(name_or_path):
            raise SampleCliError(f"model `{display}`: no such directory {local}; pass a directory written by "
                                 "save_pretrained, or a Hugging Face model id")

    from samplecli.backends.quiet import quiet_transformers

    with quiet_transformers():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        target = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, target)
        try:
            tokenizer = _from_pretrained(AutoTokenizer, path, trust_remote_code=trust_remote_code)
            model = _from_pretrained(AutoModelForCausalLM, path, trust_remote_code=trust_remote_code,
                                     dtype=torch_dtype, use_safetensors=_prefers_safetensors(path))
        except SampleCliError:
            raise
        except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... for bad models
            damaged = _damaged_weights(path)
            if damaged is not None:
                raise SampleCliError(f"model `{display}`: {damaged}; download or save the model again") from exc
            raise SampleCliError(f"model `{display}` could not be loaded: {_one_line(exc)}") from exc
    model.to(target)
    model.eval()
    if target.type == "cpu":
        from samplecli.backends.threads import use_torch_threads

        use_torch_threads(model, threads)
    return LM(model=model, tokenizer=tokenizer, name=display, device=target)


def _damaged_weights(path: str) -> str | None:
    """What is wrong with the first damaged .safetensors file of a local model directory (a download cut short:
    its header says more bytes than the file has), naming the file; None when they all look whole."""
    import json
    import struct

    local = Path(path)
    if not local.is_dir():
        return None
    for weights in sorted(local.glob("*.safetensors")):
        try:
            size = weights.stat().st_size
            with weights.open("rb") as file:
                head = file.read(8)
                if len(head) < 8:
                    return f"the weights file {weights} is truncated ({size} bytes, too few for a header)"
                (length,) = struct.unpack("<Q", head)
                if 8 + length > size:
                    return f"the weights file {weights} is truncated (its header alone needs {8 + length} bytes)"
                header = json.loads(file.read(length))
            ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
            if 8 + length + max(ends, default=0) > size:
                return (f"the weights file {weights} is truncated ({size} bytes of "
                        f"{8 + length + max(ends, default=0)})")
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            return f"the weights file {weights} is damaged ({_one_line(exc)})"
    return None


def _is_path(name: str) -> bool:
    """Whether `name` can only be a filesystem path, never a hub id ("org/name" has at most one slash
    and starts with a letter or digit), so a missing one fails at once instead of asking the hub."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or Path(name).is_absolute()


def _prefers_safetensors(path: str) -> bool | None:
    """True where a local directory has safetensors weights; None (transformers' choice) otherwise."""
    local = Path(path)
    if local.is_dir():
        return True if any(local.glob("*.safetensors")) else None
    return None


def _from_pretrained(cls, path: str, **kwargs):
    """Try the local cache first, then the hub; turn a failure into a clear one-line error."""
    try:
        return cls.from_pretrained(path, local_files_only=True, **kwargs)
    except OSError as local_error:
        if Path(path).exists():
            raise SampleCliError(f"model `{path}` could not be loaded: {_one_line(local_error)}") from local_error
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):  # no lookup at all
            raise SampleCliError(
                f"model `{path}` is not in the local Hugging Face cache, and HF_HUB_OFFLINE is set, so the hub is "
                f"not asked; to run offline, download it once where the hub is reachable (`hf download {path}`, or "
                "one run without HF_HUB_OFFLINE), or pass a local directory written by save_pretrained"
            ) from None
    if not hub_reachable():
        raise SampleCliError(
            f"model `{path}` is not in the local Hugging Face cache and the hub is unreachable; pass a local "
            "directory (one written by save_pretrained), or download the model where the hub is reachable"
        )
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as hub_error:
        raise SampleCliError(
            f"model `{path}` is not in the local Hugging Face cache and the hub is unreachable or has no such "
            "model; pass a local directory (one written by save_pretrained) or check the name"
        ) from hub_error


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (so a missing model fails in seconds,
    not after huggingface_hub's minute of retries)."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout):
            return True
    except OSError:
        return False


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")
