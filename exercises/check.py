"""The command line:  python -m exercises.check NAME... [--solution]   (NAME: an exercise, or all)."""
import sys

from exercises.checking import main

if __name__ == "__main__":
    sys.exit(main())
