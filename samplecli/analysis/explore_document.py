"""`samplecli explore`'s saved sessions: the tree as one JSON document (every node's token, its probabilities
and entropies, the strategy that chose it, and the current text), written by `s` and reopened by `--load`."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samplecli.analysis.exploration import ROWS, Session
from samplecli.analysis.explore_settings import build, settings_from_record, settings_record, starting_settings
from samplecli.analysis.explore_tree import Node
from samplecli.backends.base import distribution_label
from samplecli.engine.events import json_number
from samplecli.errors import SampleCliError, UsageError
from samplecli.stats import LN2

if TYPE_CHECKING:
    from samplecli.backends.base import Backend

DOCUMENT_TYPE = "samplecli-explore"
DOCUMENT_VERSION = 1
SAVED_FIELDS = tuple(f.name for f in fields(Node) if f.name != "logits")  # the logits are recomputed on load
REQUIRED = ("model", "vocab_size", "prompt", "prompt_ids", "seed", "draws", "strategy", "current", "selected", "nodes")


def node_record(node: Node) -> dict[str, Any]:
    """A node as a JSON-safe dict, with its entropies in bits beside nats (no logits)."""
    record = {name: getattr(node, name) for name in SAVED_FIELDS}
    record["settings"] = settings_record(node.settings)
    for name in ("prob", "logprob", "strategy_prob", "entropy_nats", "strategy_entropy_nats", "kl_nats"):
        record[name] = json_number(record[name])
    for nats, bits in (("entropy_nats", "entropy_bits"), ("strategy_entropy_nats", "strategy_entropy_bits")):
        record[bits] = record[nats] / LN2 if record[nats] is not None else None
    return record


def document(session: Session) -> dict[str, Any]:
    """The whole session: every node, the strategy (current and starting), the seed, the draws made so far,
    the cursor, the current branch's text and each branch's log-probability and perplexity."""
    backend = session.backend
    return {
        "type": DOCUMENT_TYPE, "version": DOCUMENT_VERSION, "model": backend.name, "vocab_size": backend.vocab_size,
        "distribution": distribution_label(backend), "prompt": session.prompt, "prompt_ids": list(session.prompt_ids),
        "seed": session.seed, "draws": session.draws,
        "strategy": {"chain": session.chain, "settings": settings_record(session.settings),
                     "initial_settings": settings_record(session.initial_settings),
                     "warm_temperature": session.warm_temperature},
        "current": session.current, "selected": session.selected, "text": session.text(),
        "branches": [{"number": b.number, "leaf": b.leaf, "tokens": b.tokens, "text": b.text,
                      "logprob": json_number(b.logprob), "perplexity": b.perplexity} for b in session.branches()],
        "nodes": [node_record(n) for n in session.nodes],
    }


def save(session: Session, path: Path) -> None:
    text = json.dumps(document(session), ensure_ascii=False, allow_nan=False, indent=1)
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise SampleCliError(f"could not save the session to {path}: {exc.strerror or exc}") from None


def read_document(path: Path) -> dict[str, Any]:
    """A saved session, checked enough to restore (before any model loads); raises UsageError naming the file."""
    from samplecli.config.inputs import SMALL_LIMIT, read_text_file

    text = read_text_file(path, "--load", SMALL_LIMIT)  # a device such as /dev/zero is refused, not read
    try:
        saved = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--load {path}: not a JSON file ({exc})") from None
    if not isinstance(saved, dict) or saved.get("type") != DOCUMENT_TYPE:
        raise UsageError(f"--load {path}: not a session saved by `samplecli explore` (no \"type\": "
                         f"\"{DOCUMENT_TYPE}\")")
    if saved.get("version") != DOCUMENT_VERSION:
        raise UsageError(f"--load {path}: version {saved.get('version')!r}; this samplecli reads version "
                         f"{DOCUMENT_VERSION}")
    missing = [k for k in REQUIRED if k not in saved]
    if missing:
        raise UsageError(f"--load {path}: the session lacks {', '.join(missing)}")
    try:
        starting_settings(settings_from_record(saved["strategy"]["initial_settings"]))
        build(settings_from_record(saved["strategy"]["settings"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"--load {path}: the session's strategy is not readable ({exc})") from None
    return saved


def restore(backend: Backend, saved: dict[str, Any], rows: int = ROWS) -> Session:
    """The session of `document()` on `backend`, the generator where it stood; logits are recomputed as needed."""
    if saved["vocab_size"] != backend.vocab_size:
        raise UsageError(f"the session was saved with a vocabulary of {saved['vocab_size']} tokens (model "
                         f"`{saved['model']}`), but model `{backend.name}` has {backend.vocab_size}")
    strategy = saved["strategy"]
    session = Session(backend, saved["prompt"], settings_from_record(strategy["initial_settings"]), saved["seed"],
                      rows=rows, prompt_ids=saved["prompt_ids"])
    session.settings = settings_from_record(strategy["settings"])
    session.warm_temperature = strategy["warm_temperature"]
    try:
        session.nodes = [Node(**{**{k: record[k] for k in SAVED_FIELDS if k in record},
                                 "settings": settings_from_record(record.get("settings", {}))})
                         for record in saved["nodes"]]
        session.current, session.selected = saved["current"], saved["selected"]
        session.path()
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"the saved session's tree is not readable ({exc})") from None
    bad = [n.id for i, n in enumerate(session.nodes)
           if n.id != i or (n.token_id is not None and not 0 <= n.token_id < backend.vocab_size)]
    if bad or session.nodes[0].parent is not None:
        raise UsageError(f"the saved session's tree is not readable (node {bad[0] if bad else 0})")
    session.skip_draws(saved["draws"])
    return session
