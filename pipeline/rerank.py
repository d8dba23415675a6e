"""DVC stage 'rerank': see embedlab.stages.rerank."""

import sys

from embedlab.stages import main

if __name__ == "__main__":
    sys.exit(main("rerank"))
