"""Keep library chatter (progress bars, advisory warnings) out of the user's terminal."""

from __future__ import annotations

import contextlib
import logging
import os


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' and huggingface_hub's info logs and progress bars while loading.

    Warnings stay visible: the code uses the current API, so a deprecation warning is a bug to fix.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    yield
