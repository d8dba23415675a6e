"""DVC stage 'embed': see embedlab.stages.embed."""

import sys

from embedlab.stages import main

if __name__ == "__main__":
    sys.exit(main("embed"))
