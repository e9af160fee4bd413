"""`samplecli chat`: a read-eval loop with a chat model. Each reply streams in generate's live panel; slash
commands change the decoding between turns; on piped stdin, one message per line and the replies on stdout."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from samplecli.backends.base import Backend
from samplecli.cli.app import ModelOpt, PresetOpt, _err_console, app, error_boundary
from samplecli.cli.chat_options import CHAT_PANEL, ChatTemplateOpt, ModelDefaultsOpt
from samplecli.cli.options import SAMPLING_OPTIONS, with_model_options, with_settings
from samplecli.errors import SampleCliError, Terminated, UsageError

CHAT_RUN_OPTIONS = ("max_new_tokens", "min_new_tokens", "stop_strings", "seed", "top_n")
PROMPT = "you> "
MORE = "...> "  # the prompt of a message's next line (after a trailing backslash, or inside a \"\"\" block)

ChatSystemOpt = Annotated[str | None, typer.Option("--system", help="The system message the conversation starts "
                                                   "with.", rich_help_panel=CHAT_PANEL)]
ChatMessagesOpt = Annotated[Path | None, typer.Option(
    "--messages", help="A conversation to start from: a JSON list of {role, content}, or a file /save wrote.",
    rich_help_panel=CHAT_PANEL)]
ContinueOpt = Annotated[Path | None, typer.Option(
    "--continue", help="Go on with the conversation /save wrote to FILE; /save with no name writes it back.",
    rich_help_panel=CHAT_PANEL)]


@dataclass
class Session:
    """A conversation, the settings it decodes with, and each reply's per-step records (for /save)."""

    lm: Backend
    settings: Any  # config.chat_session.ChatSettings
    system: str | None
    template: str | None
    start: list[dict[str, str]] = field(default_factory=list)  # --messages: the conversation it begins with
    turns: list[dict[str, Any]] = field(default_factory=list)
    save_to: Path | None = None  # --continue FILE: where /save with no name writes

    def load(self, path: Path) -> int:
        """Go on from the conversation in `path` (what /save wrote, or a JSON list): it replaces this one."""
        from samplecli.config.chat import read_messages

        messages = read_messages(path, "/load")
        self.turns.clear()
        if messages[0]["role"] == "system":
            self.system = messages.pop(0)["content"]
        self.start = messages
        return len(messages)

    def drop_oldest(self) -> int:
        """Leave out the oldest exchange (a user message and what follows it up to the next one), never the
        system message; how many messages went (0: nothing left to drop)."""
        for held in (self.start, self.turns):
            if held:
                count = 1 + next((i for i, m in enumerate(held[1:]) if m["role"] == "user"), len(held) - 1)
                del held[:count]
                return count
        return 0

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + list(self.start) + [{"role": t["role"], "content": t["content"]} for t in self.turns]

    def plan(self):
        """The strategy and run config of the current settings (one line for anything chat cannot do)."""
        from samplecli.cli.app import View
        from samplecli.cli.generate import plan_generate

        plan = plan_generate(self.settings.resolved(), [], View.live, self.lm.vocab)
        if plan.search is not None:
            raise UsageError("chat samples one reply per turn; beam search is for `samplecli generate`")
        return plan

    def save(self, path: Path) -> None:
        from samplecli.views.records import dumps

        lines = [{"type": "chat", "model": self.lm.name, "system": self.system}]
        lines += [{"type": "message", **m} for m in self.start]
        lines += [{"type": "message", **turn} for turn in self.turns]
        try:
            path.write_text("".join(dumps(line) + "\n" for line in lines), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"/save {path}: cannot write it ({exc.__class__.__name__}: {exc})") from None


@app.command()
@with_settings(*SAMPLING_OPTIONS, *CHAT_RUN_OPTIONS)
@with_model_options
def chat(
    model: ModelOpt = None,
    preset: PresetOpt = None,
    system: ChatSystemOpt = None,
    messages: ChatMessagesOpt = None,
    continue_from: ContinueOpt = None,
    chat_template: ChatTemplateOpt = None,
    model_defaults: ModelDefaultsOpt = False,
    *,
    flags: dict[str, Any],
    open_model: Callable[[str | None], Backend],
) -> None:
    """Talk with a chat model: each reply streams with its live panel; /help lists the slash commands."""
    with error_boundary():
        from samplecli.cli.chat_options import chat_prompt
        from samplecli.config.chat import chat_request, check_chat_template, describe_suggestions, model_suggestions
        from samplecli.config.chat_session import ChatSettings

        if sys.stdin is None:  # `<&-`: no messages can come
            raise UsageError("standard input is closed: chat reads the messages from it; run it on a terminal, or "
                             "pipe the messages in (printf 'hello\\n' | samplecli chat)")
        if messages is not None and continue_from is not None:
            raise UsageError(f"--messages {messages} and --continue {continue_from}: give one conversation to "
                             "start from")
        request = chat_request(True, system, messages or continue_from, chat_template,
                               "--messages" if continue_from is None else "--continue")
        start = ChatSettings({k: v for k, v in flags.items() if v is not None}, preset)
        reference = start.resolved().get("model") if model is None else model
        if model is not None:
            start = ChatSettings({**start.flags, "model": model}, preset)
        check_chat_template(reference, request, command="chat")
        suggested = model_suggestions(reference)
        if model_defaults and suggested:
            start = ChatSettings(start.flags, preset, suggested)
        lm = open_model(reference)
        session = Session(lm, start, None, request.template, start=list(request.messages), save_to=continue_from)
        if session.start and session.start[0]["role"] == "system":
            session.system = session.start.pop(0)["content"]
        session.plan()  # the settings are checked before the first message
        chat_prompt(lm, [*session.messages(), {"role": "user", "content": "hi"}], session.template)
        err = _err_console()
        terminal = sys.stdin is not None and sys.stdin.isatty()
        if suggested and not model_defaults:
            err.print(f"[dim]model suggests: {describe_suggestions(suggested)} (--model-defaults to use them)[/]",
                      highlight=False, soft_wrap=True)
        if terminal:
            err.print(f"[dim]chatting with {lm.name}; /help for commands, Ctrl-D to leave[/]", highlight=False)
    with error_boundary():  # a full disk or a closed stdout under a reply: one line, not a traceback
        loop(session, terminal)


def loop(session: Session, terminal: bool) -> None:
    """Read a line, answer it; bad input is one line and the conversation goes on."""
    err = _err_console()
    if terminal:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history for input()
    while True:
        try:
            line = input(PROMPT) if terminal else sys.stdin.readline()
        except EOFError:
            break
        except Terminated:
            raise
        except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line, as a shell does
            print(file=sys.stderr)
            continue
        if not terminal and line == "":
            break
        line = line.rstrip("\n")
        try:
            line = whole_message(line, terminal)
        except EOFError:
            break
        if not line.strip():
            continue
        try:
            if line.startswith("/"):
                if command(session, line, err) == "exit":
                    break
            else:
                reply(session, line, terminal)
        except SampleCliError as exc:
            from rich.markup import escape

            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        except Terminated:
            raise
        except KeyboardInterrupt:  # before the reply began streaming (the template, the prefill's setup)
            err.print("[yellow]stopped[/]")
    if terminal:
        print(file=sys.stderr)


def whole_message(line: str, terminal: bool) -> str:
    """A message of several lines, as llama-cli and Ollama take one: a line ending in a backslash goes on with the
    next line, and a line holding only three double quotes opens a block that the next such line closes."""
    def more() -> str:
        if terminal:
            return input(MORE)
        got = sys.stdin.readline()
        if got == "":
            raise EOFError
        return got.rstrip("\n")

    if line.strip() == '"""':
        lines = []
        while (next_line := more()).strip() != '"""':
            lines.append(next_line)
        return "\n".join(lines)
    parts = []
    while line.endswith("\\"):
        parts.append(line[:-1])
        line = more()
    return "\n".join([*parts, line])


def command(session: Session, line: str, err) -> str | None:
    """Run a slash command; "exit" to leave."""
    from rich.markup import escape

    from samplecli.config.chat_session import RUN_KEYS, help_rows, setting_commands

    name, _, argument = line[1:].strip().partition(" ")
    argument = argument.strip()
    if name in ("exit", "quit"):
        return "exit"
    if name == "help":
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
        table.add_column(no_wrap=True, style="bold")
        table.add_column(overflow="fold")
        for shown, what in help_rows():
            table.add_row(shown, escape(what))
        err.print(table, highlight=False)
        err.print("[dim]a setting's command takes its value (/temp 0.5) and changes the next replies; end a line "
                  'with \\ to go on to the next, or put a message between two lines of """[/]', highlight=False)
        return None
    if name == "show":
        err.print(escape(str(session.plan().built.strategy)), highlight=False, soft_wrap=True)
        return None
    if name == "reset":
        session.turns.clear()
        session.start.clear()
        err.print("[dim]conversation cleared[/]")
        return None
    if name == "save":
        if not argument and session.save_to is None:
            raise UsageError("/save needs a file name, e.g. /save chat.jsonl")
        path = Path(argument).expanduser() if argument else session.save_to
        session.save(path)
        err.print(f"[dim]saved {len(session.start) + len(session.turns)} messages to {escape(str(path))}[/]",
                  highlight=False)
        return None
    if name == "load":
        if not argument:
            raise UsageError("/load needs a file name, e.g. /load chat.jsonl")
        count = session.load(Path(argument).expanduser())
        err.print(f"[dim]loaded {count} messages from {escape(argument)}; the conversation goes on from there[/]",
                  highlight=False)
        return None
    changed = session.settings.command(name, argument)
    previous, session.settings = session.settings, changed
    try:
        plan = session.plan()
    except SampleCliError:
        session.settings = previous
        raise
    key = setting_commands().get(name)
    if key in RUN_KEYS[2:]:  # a run setting: its value, not the chain (which it does not change)
        err.print(f"[dim]now: {key} = {session.settings.resolved().get(key)}[/]", highlight=False)
    else:
        from samplecli.views.render import chain_parts, print_flowed

        print_flowed(err, ["now:", *chain_parts(str(plan.built.strategy))], " ")  # broken between stages
    return None


def reply(session: Session, text: str, terminal: bool) -> None:
    """Answer `text`: the reply streams (a live panel on a terminal; plain text on stdout when piped) and joins
    the conversation with its per-step records; Ctrl-C stops it and keeps what was said."""
    from rich.console import Console

    from samplecli.engine.decode import decode, resolved_seed
    from samplecli.engine.events import Done, Step
    from samplecli.engine.server_decode import server_chain, server_decode
    from samplecli.views import render
    from samplecli.views.records import step_record
    from samplecli.views.sinks import OneLineSink, Sink

    plan = session.plan()
    user = {"role": "user", "content": text}
    prompt, dropped = fitted_prompt(session, user, plan.config.max_new_tokens)
    seed = resolved_seed(plan.config.seed)
    config = type(plan.config)(**{**plan.config.__dict__, "seed": seed, "num_samples": 1})
    if prompt.templated_by is None:
        chain = str(plan.built.strategy)
        events = decode(session.lm, plan.built.strategy, prompt.ids, config)
    else:  # an engine that templates the chat itself (the OpenAI protocol) also samples the reply
        on_server = server_chain(session.lm, plan.built.strategy, config)
        chain = str(on_server)
        events = server_decode(session.lm, on_server, prompt.ids, config, label=chain)
    err = _err_console()
    if dropped:
        err.print(f"[dim]the context ({session.lm.context_length} tokens) is full: the oldest {dropped} messages are "
                  "left out of the prompt (the system message stays); /reset clears the conversation[/]",
                  highlight=False, soft_wrap=not err.is_terminal)
    render.print_flowed(err, render.header_parts(session.lm.name, chain, seed), " ")
    sink: Sink = (render.TerminalSink(err, Console(highlight=False), chain, "live", summary=True) if terminal
                         else OneLineSink(sys.stdout))
    steps: list[Step] = []
    done: Done | None = None
    try:
        with sink:
            for event in events:
                if isinstance(event, Step):
                    steps.append(event)
                else:
                    done = event
                sink.send(event)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):  # a kill ends the chat (the reply's text so far is already out)
            raise
        err.print("[yellow]reply stopped[/]")
    content = done.text if done is not None else "".join(s.text for s in steps)
    session.turns.append(user)
    session.turns.append({"role": "assistant", "content": content, "strategy": chain, "seed": seed,
                          "finish_reason": done.finish_reason if done is not None else "interrupted",
                          "steps": [step_record(s) for s in steps]})


def fitted_prompt(session: Session, user: dict[str, str], max_new_tokens: int):
    """The prompt of the conversation and `user`'s message, with the oldest exchanges left out while the model's
    context would not leave the reply room (a quarter of the context, or max_new_tokens where less), as llama-cli
    and Ollama shift theirs; and how many messages were left out. The session keeps them (/save writes them)."""
    from samplecli.cli.chat_options import chat_prompt

    context = session.lm.context_length
    room = 1 if context is None else min(max_new_tokens, max(context // 4, 1))
    held = Session(session.lm, session.settings, session.system, session.template, list(session.start),
                   list(session.turns))
    dropped = 0
    while True:
        try:
            prompt = chat_prompt(session.lm, [*held.messages(), user], session.template)
        except UsageError:
            if context is None or not (gone := held.drop_oldest()):
                raise
            dropped += gone
            continue
        if context is None or len(prompt.ids) + room <= context or not (gone := held.drop_oldest()):
            return prompt, dropped
        dropped += gone


__all__ = ["Session", "chat"]
