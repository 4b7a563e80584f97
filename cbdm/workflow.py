"""Glue between Snakemake's `script:` jobs and the stage functions."""
from __future__ import annotations

import contextlib
import os
import sys
import traceback


@contextlib.contextmanager
def job(snakemake):
    """Run a rule's body with stdout/stderr (Python's and C's) going to the rule's log file and
    torch limited to the rule's threads. An error is written to the log and raised again
    with the console restored, so Snakemake shows it too."""
    log_path = snakemake.log[0]
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            if "torch" in sys.modules:  # stages without torch should not pay for importing it
                sys.modules["torch"].set_num_threads(snakemake.threads)
            yield
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
