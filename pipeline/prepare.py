"""DVC stage 'prepare': see embedlab.stages.prepare."""

import sys

from embedlab.stages import main

if __name__ == "__main__":
    sys.exit(main("prepare"))
