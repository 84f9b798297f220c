"""python -m exercises NAME... [--solution]: the same as python -m exercises.check."""
import sys

from exercises.checking import main

sys.exit(main())
