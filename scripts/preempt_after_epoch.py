"""``ilif-train`` with the given overrides, preempted the way a scheduler does it: the process sends
itself SIGTERM as soon as the first epoch's checkpoint is written, so the run stops with exit code 75
and a ``last.pt`` that the same command, run again without this wrapper, resumes.

    python scripts/preempt_after_epoch.py trainer.epochs=2 ...   # exit 75; \
then: python -m ilif.train trainer.epochs=2 ...
"""

from __future__ import annotations

import os
import signal
import sys

from ilif.train import app, loop


def main() -> None:
    save = loop.Trainer.save

    def save_then_preempt(*args, **kwargs):
        save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    loop.Trainer.save = save_then_preempt
    sys.argv = ["ilif-train", *sys.argv[1:]]
    app.main()


if __name__ == "__main__":
    main()
