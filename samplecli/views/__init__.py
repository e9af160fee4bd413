"""Views: Rich renderers, JSONL/JSON records and plots. Pure functions of the events and reports they are given."""
