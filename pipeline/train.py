"""DVC stage 'train': see embedlab.stages.train."""

import sys

from embedlab.stages import main

if __name__ == "__main__":
    sys.exit(main("train"))
