import sys

from aip.cli import main

sys.exit(main())
