"""`samplecli chat`: a read-eval loop with a chat model. Each reply streams in generate's live panel; slash
commands change the decoding between turns; on piped stdin, one message per line and the replies on stdout."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samplecli.backends.base import Backend
from samplecli.cli.app import ModelOpt, PresetOpt, _err_console, app, error_boundary
from samplecli.cli.chat_options import ChatTemplateOpt, MessagesOpt, ModelDefaultsOpt, SystemOpt
from samplecli.cli.options import SAMPLING_OPTIONS, with_model_options, with_settings
from samplecli.errors import SampleCliError, Terminated, UsageError

CHAT_RUN_OPTIONS = ("max_new_tokens", "min_new_tokens", "stop_strings", "seed", "top_n")
PROMPT = "you> "


@dataclass
class Session:
    """A conversation, the settings it decodes with, and each reply's per-step records (for /save)."""

    lm: Backend
    settings: Any  # config.chat_session.ChatSettings
    system: str | None
    template: str | None
    start: list[dict[str, str]] = field(default_factory=list)  # --messages: the conversation it begins with
    turns: list[dict[str, Any]] = field(default_factory=list)

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
    system: SystemOpt = None,
    messages: MessagesOpt = None,
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
        request = chat_request(True, system, messages, chat_template)
        start = ChatSettings({k: v for k, v in flags.items() if v is not None}, preset)
        reference = start.resolved().get("model") if model is None else model
        if model is not None:
            start = ChatSettings({**start.flags, "model": model}, preset)
        check_chat_template(reference, request)
        suggested = model_suggestions(reference)
        if model_defaults and suggested:
            start = ChatSettings(start.flags, preset, suggested)
        lm = open_model(reference)
        session = Session(lm, start, None, request.template, start=list(request.messages))
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


def command(session: Session, line: str, err) -> str | None:
    """Run a slash command; "exit" to leave."""
    from rich.markup import escape

    from samplecli.config.chat_session import ACTIONS, setting_commands

    name, _, argument = line[1:].strip().partition(" ")
    argument = argument.strip()
    if name in ("exit", "quit"):
        return "exit"
    if name == "help":
        for action, what in ACTIONS.items():
            err.print(f"/{action}  {what}", highlight=False)
        err.print("/" + ", /".join(sorted(setting_commands())) + "  VALUE: change a setting for the next replies",
                  highlight=False, soft_wrap=True)
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
        if not argument:
            raise UsageError("/save needs a file name, e.g. /save chat.jsonl")
        session.save(Path(argument).expanduser())
        err.print(f"[dim]saved {len(session.turns)} messages to {escape(argument)}[/]", highlight=False)
        return None
    changed = session.settings.command(name, argument)
    previous, session.settings = session.settings, changed
    try:
        plan = session.plan()
    except SampleCliError:
        session.settings = previous
        raise
    err.print(f"[dim]now: {escape(str(plan.built.strategy))}[/]", highlight=False, soft_wrap=True)
    return None


def reply(session: Session, text: str, terminal: bool) -> None:
    """Answer `text`: the reply streams (a live panel on a terminal; plain text on stdout when piped) and joins
    the conversation with its per-step records; Ctrl-C stops it and keeps what was said."""
    from rich.console import Console

    from samplecli.cli.chat_options import chat_prompt
    from samplecli.engine.decode import decode, resolved_seed
    from samplecli.engine.events import Done, Step
    from samplecli.engine.server_decode import server_chain, server_decode
    from samplecli.views import render
    from samplecli.views.records import step_record

    plan = session.plan()
    user = {"role": "user", "content": text}
    prompt = chat_prompt(session.lm, [*session.messages(), user], session.template)
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
    render.print_flowed(err, render.header_parts(session.lm.name, chain, seed), " ")
    sink: render.Sink = (render.TerminalSink(err, Console(highlight=False), chain, "live", summary=True) if terminal
                         else render.TextSink(sys.stdout, 1))
    steps: list[Step] = []
    done: Done | None = None
    try:
        for event in events:
            if isinstance(event, Step):
                steps.append(event)
                sink.step(event)
            else:
                done = event
                sink.done(event)
    except KeyboardInterrupt as exc:
        sink.close(interrupted=True)
        if isinstance(exc, Terminated):  # a kill ends the chat (the reply's text so far is already out)
            raise
        err.print("[yellow]reply stopped[/]")
    else:
        sink.close()
    content = done.text if done is not None else "".join(s.text for s in steps)
    session.turns.append(user)
    session.turns.append({"role": "assistant", "content": content, "strategy": chain, "seed": seed,
                          "finish_reason": done.finish_reason if done is not None else "interrupted",
                          "steps": [step_record(s) for s in steps]})


__all__ = ["Session", "chat"]
