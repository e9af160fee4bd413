"""`inspect --pair A B`: resolve the two tokens, restrict the distribution to them, show it."""

from __future__ import annotations

from samplecli.errors import UsageError


def parse_pair(pair: tuple[str, str] | list[str], plan=None) -> tuple[int | str, int | str]:
    """Both tokens, each an id or text; checked before the model loads. `plan`: inspect's other views, which
    --pair replaces, so asking for one of them too is refused rather than ignored."""
    from samplecli.config.tokens import parse_token

    if plan is not None:
        others = [flag for flag, asked in (("--temps", plan.temps), ("--draws", plan.draws is not None),
                                           ("--sweep", plan.sweeps), ("--order-diff", plan.orders is not None),
                                           ("--plot", plan.plot is not None)) if asked]
        if others:
            raise UsageError(f"--pair shows only the pair; it does not combine with {', '.join(others)}")

    if len(pair) != 2:
        raise UsageError(f"--pair takes two tokens, A and B, but got {len(pair)}")
    tokens = []
    for entry in pair:
        try:
            tokens.append(parse_token(entry))
        except UsageError as exc:
            raise UsageError(f"--pair {entry!r}: {exc}") from None
    if tokens[0] == tokens[1]:
        raise UsageError(f"--pair: A and B are the same token ({pair[0]!r}); give two different tokens")
    return tokens[0], tokens[1]


def run_pair(prompt: str, plan, lm, pair: tuple[int | str, int | str], *, json_format: bool, chat=None,
             output=None) -> None:
    """Resolve A and B in the model's vocabulary and print the restriction (JSON or text) on stdout (the JSON to
    `output` where it is given)."""
    from rich.console import Console

    from samplecli.analysis.pair import pair_at
    from samplecli.backends.base import TEACHER_FORCE
    from samplecli.config.tokens import resolve_token
    from samplecli.views.pair import dumps_pair, show_pair

    if TEACHER_FORCE not in lm.capabilities and lm.top_n is not None:  # before any request for a distribution
        raise UsageError(f"--pair needs both tokens' logits, but {lm.engine or lm.name} returns "
                         f"only its top {lm.top_n} per step, which may leave A or B out; use llama.cpp's native "
                         "API without --top-logprobs, or a local model")
    a, b = (resolve_token(t, lm.vocab, lm.vocab_size, "--pair") for t in pair)
    result = pair_at(lm, chat.text, plan, a, b, chat.ids) if chat is not None else pair_at(lm, prompt, plan, a, b)
    if json_format:
        from samplecli.cli.app import write_report

        write_report(output, dumps_pair(result) + "\n")
    else:
        show_pair(Console(highlight=False), result)
