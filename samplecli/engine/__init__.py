"""The engine: events, the decode loop, detokenisation and beam search. It asks a backend for scores and a strategy
for choices; it never imports Rich, Typer or transformers."""
