"""`python -m retention_pipeline.webhooks --port PORT [--host 127.0.0.1]`: the Metronome webhook receiver.

A stable command next to `python -m retention_pipeline`; the receiver itself is retention_pipeline/operations/webhooks.py.
"""

import sys

from retention_pipeline.operations.webhooks import main

if __name__ == "__main__":
    sys.exit(main())
