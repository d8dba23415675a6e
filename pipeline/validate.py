"""DVC stage 'validate': see embedlab.stages.validate."""

import sys

from embedlab.stages import main

if __name__ == "__main__":
    sys.exit(main("validate"))
