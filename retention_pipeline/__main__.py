"""`python -m retention_pipeline …` is the `retention` command (retention_pipeline/cli/)."""

import sys

from retention_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
