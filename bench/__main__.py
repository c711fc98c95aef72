"""
C{python -m bench}: see L{bench.suite}.
"""

import sys

from bench.suite import main

sys.exit(main())
