"""`samplecli explore`'s state: a tree of chosen tokens, the cursor, the strategy's settings, undo and branches,
as plain Python (no UI here; the Textual app in `views/explore_app.py` only drives it; `explore_settings` moves
the settings, `explore_document` saves and reopens a session).

The model is reached through the backend seam alone (`start`, `Batch.advance`, `vocab`): every node of the tree
caches the raw logits for the token after it, so a change of strategy recomputes the distribution from the cache
and only a new token costs a forward pass. The numbers shown for a position come from `analysis.inspection`
(`top_tokens`, `trace`): the same registry `distribution()` as `samplecli inspect`.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from samplecli.analysis.explore_settings import adjusted, build
from samplecli.analysis.explore_tree import Branch, Candidate, Node, Position, Segment
from samplecli.analysis.inspect_position import Context, distribution, ready
from samplecli.analysis.inspection import top_tokens, trace
from samplecli.backends.base import distribution_label
from samplecli.engine.decode import encode_prompt
from samplecli.engine.detokenize import Detokenizer
from samplecli.engine.events import sample_seed
from samplecli.errors import SampleCliError
from samplecli.strategies import SELECTORS, Strategy

if TYPE_CHECKING:
    import torch

    from samplecli.backends.base import Backend

ROWS = 20  # candidates shown for a position, ranked by the raw model
END_NOTES = {"eos": "the model ended the text here (end-of-text); backspace to go back",
             "context": "the model's context is full here; backspace to go back"}


KEEP_LOGITS = 8  # nodes whose raw logits a session keeps (the cursor's, and the most recently used)


class Session:
    """The explored tree, the cursor, the strategy's settings (current and starting) and the seeded draws.

    Only `forward` runs the model (the Textual app calls it off the UI thread); everything else reads cached
    logits. Sampling draws one uniform number per stochastic step from one `torch.Generator` seeded with
    `sample_seed(seed, 0)`, the generator of sample 0 of `samplecli generate --seed SEED`: pressing `space`
    with an unchanged strategy from the prompt gives exactly what `generate` gives.
    """

    def __init__(self, backend: Backend, prompt: str, settings: dict[str, Any], seed: int, *, rows: int = ROWS,
                 prompt_ids: list[int] | None = None) -> None:
        import torch

        self.backend = backend
        self.prompt = prompt
        self.prompt_ids = list(prompt_ids) if prompt_ids is not None else encode_prompt(backend, prompt)
        self.seed = seed
        self.rows = rows
        self.initial_settings = dict(settings)
        self.settings = dict(settings)
        self.warm_temperature = settings.get("temperature") or 1.0
        self.nodes = [Node(0, None, None, prompt, "prompt")]
        self.current = 0
        self.selected = 0
        self.draws = 0
        self.last_take = ""  # what the last `take` did: "new", "branch" (a new one) or "again" (an existing node)
        self._generator = torch.Generator().manual_seed(sample_seed(seed, 0))
        self._frontier: tuple[Any, int] | None = None  # (batch, the node whose state it holds)
        self._lock = threading.Lock()
        self._strategies: dict[tuple, Strategy] = {}
        self._positions: dict[tuple, Position] = {}
        self._with_logits: OrderedDict[int, None] = OrderedDict()  # the nodes holding logits, least recent first

    def skip_draws(self, count: int) -> None:
        """Move the generator on by `count` draws (a restored session continues where it was saved)."""
        import torch

        for _ in range(count):
            torch.rand(1, generator=self._generator)
        self.draws += count

    # --- the strategy ---

    @property
    def strategy(self) -> Strategy:
        return self._strategy_for(self.settings)

    def _strategy_for(self, settings: dict[str, Any]) -> Strategy:
        key = _key(settings)
        if key not in self._strategies:
            self._strategies[key] = build(settings)
        return self._strategies[key]

    @property
    def chain(self) -> str:
        return str(self.strategy)

    @property
    def greedy(self) -> bool:
        return self.settings.get("temperature") == 0

    def adjust(self, knob: str, up: bool) -> None:
        if knob == "temperature" and self.settings.get("temperature", 1.0) != 0:
            self.warm_temperature = self.settings.get("temperature", 1.0)
        self.settings = adjusted(self.settings, knob, up, self.warm_temperature, self.backend.vocab_size)
        build(self.settings)  # the ladders stay inside each parameter's rule; this says so if not

    def make_greedy(self) -> None:
        """Temperature 0; `T` later returns to the temperature before it."""
        if self.settings.get("temperature", 1.0) != 0:
            self.warm_temperature = self.settings.get("temperature", 1.0)
        self.settings = {**self.settings, "temperature": 0.0}

    def reset_strategy(self) -> None:
        self.settings = dict(self.initial_settings)
        self.warm_temperature = self.initial_settings.get("temperature") or 1.0

    # --- the tree ---

    @property
    def node(self) -> Node:
        return self.nodes[self.current]

    def path(self, node_id: int | None = None) -> list[Node]:
        """The nodes from the root to `node_id` (the cursor by default)."""
        node = self.nodes[self.current if node_id is None else node_id]
        out = [node]
        while node.parent is not None:
            node = self.nodes[node.parent]
            out.append(node)
        return out[::-1]

    def ids(self, node_id: int | None = None) -> list[int]:
        """The prompt's ids and the tokens generated up to `node_id` (the cursor by default)."""
        return self.prompt_ids + [n.token_id for n in self.path(node_id)[1:]]

    @property
    def generated(self) -> list[int]:
        return [n.token_id for n in self.path()[1:]]

    def text(self, node_id: int | None = None) -> str:
        """The prompt and the text generated up to `node_id`."""
        generated = [n.token_id for n in self.path(node_id)[1:]]
        return self.prompt + self.backend.vocab.decode(generated, skip_special_tokens=True)

    def ended(self) -> str | None:
        """Why no token can follow the cursor ("eos", "context"), or None."""
        return self.node.end

    def needs_forward(self) -> bool:
        return self.node.logits is None and self.node.end is None

    def forward(self, node_id: int | None = None) -> None:
        """Compute the raw logits after `node_id` (the cursor by default): one `advance` where the backend's
        batch stands at its parent, else a prefill of the whole text. Thread-safe; the only model call."""
        import torch

        with self._lock:
            node = self.nodes[self.current if node_id is None else node_id]
            if node.logits is not None or node.end is not None:
                return
            try:
                if self._frontier is not None and node.parent is not None and self._frontier[1] == node.parent:
                    batch = self._frontier[0]
                    logits = batch.advance(torch.tensor([node.token_id], device=self.backend.device))
                else:
                    self._frontier = None
                    batch, logits = self.backend.start(self.ids(node.id), 1)
            except BaseException:
                self._frontier = None
                raise
            self._frontier = (batch, node.id)
            node.logits = logits[-1:].detach().float().cpu().clone()
            self._keep(node)

    def _keep(self, node: Node) -> None:
        """`node`'s logits are the most recently used; beyond KEEP_LOGITS nodes the least recent drop theirs (a
        V = 152k row is 0.6 MB): a long session's memory stays bounded, and a node returned to is computed again
        by `forward` (its Positions stay cached)."""
        self._with_logits[node.id] = None
        self._with_logits.move_to_end(node.id)
        while len(self._with_logits) > KEEP_LOGITS:
            old, _ = self._with_logits.popitem(last=False)
            if old != self.current:
                self.nodes[old].logits = None
            else:
                self._with_logits[old] = None

    def _context(self, node: Node) -> Context:
        import torch

        logits = node.logits  # read once: another thread may let a node's logits go
        if logits is None:
            raise SampleCliError("the distribution here is not computed yet")
        if node.id in self._with_logits:
            self._with_logits.move_to_end(node.id)
        ids = self.ids(node.id)
        return Context(logits=logits, input_ids=torch.tensor([ids]),
                       token_text=self.backend.vocab.text, eos_token_ids=tuple(self.backend.eos_token_ids),
                       seed=self.seed, vocab=self.backend.vocab, generated=tuple(ids[len(self.prompt_ids):]))

    def position(self, at: tuple[int, dict] | None = None) -> Position:
        """The distribution at the cursor under the raw model and the current strategy (cached per settings), or
        at `at` = (node, settings), which `snapshot()` took. Safe off the UI thread given `at`: a worker computes
        what was asked when it was started, and a key pressed meanwhile caches nothing under the wrong settings."""
        current, settings = at if at is not None else self.snapshot()
        key = (current, _key(settings))
        if key not in self._positions:
            self._positions[key] = self._position(self.nodes[current], self._strategy_for(settings))
        return self._positions[key]

    def snapshot(self) -> tuple[int, dict]:
        """The cursor and a copy of the settings: what `position(at=...)` computes, read on the UI thread."""
        return self.current, dict(self.settings)

    def position_ready(self) -> bool:
        """Whether the cursor's distribution under the current settings is computed (a redraw can show it now)."""
        return (self.current, _key(self.settings)) in self._positions

    def _position(self, node: Node, strategy: Strategy) -> Position:
        import torch

        ctx = self._context(node)
        finite = int(torch.isfinite(ctx.logits).sum())
        top = top_tokens(ctx, min(self.rows, finite))
        top_ids = [t.token_id for t in top]
        stages = trace(ctx, ready(strategy, ctx), top_ids)
        raw, final = stages[0], stages[-1]
        model = distribution(Strategy([], SELECTORS["sample"]()), ctx)[0].double()
        removed = distribution(ready(strategy, ctx), ctx)[0] == 0
        candidates = [Candidate(t.token_id, t.token, raw.probs[i], raw.ranks[i], final.probs[i], final.ranks[i])
                      for i, t in enumerate(top)]
        flags = tuple(flag for stage in stages[1:] for flag in stage.flags)
        return Position(
            node_id=node.id, step=len(self.path(node.id)) - 1, chain=str(strategy), candidates=candidates,
            entropy_nats=raw.entropy_nats, strategy_entropy_nats=final.entropy_nats, kept=final.kept,
            vocab_size=ctx.vocab_size, mass_removed=float(model[removed].sum()),
            kl_nats=final.kl_from_raw_nats, distribution=distribution_label(self.backend), flags=flags,
            outside=tuple((t.token, t.prob) for t in final.outside_top),
        )

    def position_label(self) -> str:
        """What the numbers are over: the full vocabulary, or only the backend's top N tokens."""
        label = distribution_label(self.backend)
        return f"full distribution over {self.backend.vocab_size} tokens" if label == "full" else \
            f"{label} only: the backend gives {label[4:]} tokens' scores"

    def strategy_distribution(self) -> torch.Tensor:
        """The strategy's next-token distribution at the cursor, (V,)."""
        ctx = self._context(self.node)
        return ready(self.strategy, ctx).distribution(ctx.logits, ctx.input_ids)[0]

    # --- choosing a token ---

    def sample(self) -> Node:
        """Draw the next token from the strategy (inverse CDF over the raw model's order, as the decode loop)."""
        import torch

        from samplecli.strategies.ranking import descending_ids

        ctx = self._context(self._ready_node())
        strategy = ready(self.strategy, ctx)
        processed = strategy.process(ctx.logits, ctx.input_ids)
        probs = strategy.selector.distribution(processed)
        draw = None
        if strategy.stochastic:
            uniforms = torch.rand(1, generator=self._generator)
            self.draws += 1
            draw = self.draws
        else:
            uniforms = torch.zeros(1)
        chosen = strategy.selector.select(processed, probs, descending_ids(ctx.logits), uniforms)
        return self.take(int(chosen[0]), "sample", draw=draw)

    def argmax(self) -> Node:
        """The strategy's most probable token (ties: the lowest id); the raw model's unless a penalty reorders."""
        return self.take(int(self.strategy_distribution().argmax()), "argmax")

    def pick(self, row: int | None = None) -> Node:
        """The candidate in `row` (the selected one by default), whatever the strategy gives it."""
        row = self.selected if row is None else row
        return self.take(self.position().candidates[row].token_id, "pick")

    def _ready_node(self) -> Node:
        node = self.node
        if node.end is not None:
            raise SampleCliError(END_NOTES[node.end])
        return node

    def take(self, token_id: int, chosen_by: str, draw: int | None = None) -> Node:
        """Move the cursor to the child with `token_id`: the existing one where this token was taken here
        before, else a new node (a new branch where this position already has a child)."""
        import torch

        parent = self._ready_node()
        parent.selected_row = self.selected
        existing = next((c for c in parent.children if self.nodes[c].token_id == token_id), None)
        if existing is not None:
            self.last_take = "again"
            parent.last_child = existing
            self.current, self.selected = existing, self.nodes[existing].selected_row
            return self.nodes[existing]
        ctx = self._context(parent)
        raw_log = torch.log_softmax(ctx.logits[0].double(), -1)
        raw = raw_log.exp()
        probs = ready(self.strategy, ctx).distribution(ctx.logits, ctx.input_ids)[0].double()
        position = self.position()
        node = Node(
            id=len(self.nodes), parent=parent.id, token_id=token_id, token=self.backend.vocab.text(token_id),
            chosen_by=chosen_by, strategy=self.chain, settings=dict(self.settings), prob=float(raw[token_id]),
            logprob=float(raw_log[token_id]), rank=1 + int((raw > raw[token_id]).sum()),
            strategy_prob=float(probs[token_id]), entropy_nats=position.entropy_nats,
            strategy_entropy_nats=position.strategy_entropy_nats, kl_nats=position.kl_nats, kept=position.kept,
            draw=draw,
        )
        if token_id in self.backend.eos_token_ids:
            node.end = "eos"
        elif self.backend.context_length is not None and len(self.ids(parent.id)) + 1 >= self.backend.context_length:
            node.end = "context"
        self.last_take = "branch" if parent.children else "new"
        self.nodes.append(node)
        parent.children.append(node.id)
        parent.last_child = node.id
        self.current, self.selected = node.id, 0
        return node

    def undo(self) -> bool:
        """Back out of the last token; the cursor's subtree stays (taking the same token again returns to it)."""
        parent = self.node.parent
        if parent is None:
            return False
        self.node.selected_row = self.selected
        self.current, self.selected = parent, self.nodes[parent].selected_row
        return True

    def select(self, row: int) -> None:
        rows = len(self.position().candidates) if self.node.logits is not None else self.rows
        self.selected = max(0, min(rows - 1, row))

    # --- branches ---

    def branches(self) -> list[Branch]:
        """Every leaf of the tree, in the order it was made, with its text, log-probability and perplexity."""
        ahead = self.node
        while ahead.last_child is not None:  # the leaf the cursor would redo into
            ahead = self.nodes[ahead.last_child]
        leaves = [n for n in self.nodes if not n.children and n.parent is not None]
        out: list[Branch] = []
        seen: list[list[int]] = []
        for number, leaf in enumerate(leaves, 1):
            path = self.path(leaf.id)[1:]
            ids = [n.id for n in path]
            shared = max((_common(ids, other) for other in seen), default=0)
            seen.append(ids)
            logprob = sum(n.logprob for n in path)
            perplexity = math.exp(-logprob / len(path)) if path and math.isfinite(logprob) else None
            out.append(Branch(number=number, leaf=leaf.id, tokens=len(path), shared=shared,
                              text=self.backend.vocab.decode([n.token_id for n in path], skip_special_tokens=True),
                              logprob=logprob, perplexity=perplexity, current=leaf.id == ahead.id))
        return out

    def switch(self, leaf: int) -> None:
        """Put the cursor at a branch's end."""
        node = self.nodes[leaf]
        path = self.path(leaf)
        for ancestor, child in zip(path, path[1:], strict=False):
            ancestor.last_child = child.id
        self.node.selected_row = self.selected
        self.current, self.selected = node.id, node.selected_row

    # --- the text, for the view ---

    def segments(self) -> list[Segment]:
        """The prompt, each generated token's text coloured by its raw probability, then the continuation the
        cursor backed out of (ghost), decoded incrementally so a character split over tokens shows whole."""
        segments = [Segment(self.prompt, None, 0)]
        detok = Detokenizer(self.backend.vocab)
        path = self.path()[1:]
        ghost: list[Node] = []
        node = self.node
        while node.last_child is not None:
            node = self.nodes[node.last_child]
            ghost.append(node)
        nodes = path + ghost
        for i, n in enumerate(nodes):
            piece = detok.push(n.token_id) if n.end != "eos" else ""
            if i == len(nodes) - 1:
                piece += detok.finish()
            segments.append(Segment(piece, n.prob, n.id, ghost=i >= len(path)))
        return segments


def _key(settings: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in settings.items()))


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
