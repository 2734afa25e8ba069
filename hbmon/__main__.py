import sys

from hbmon.cli import main

sys.exit(main())
