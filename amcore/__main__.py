import sys

from amcore.cli import main

sys.exit(main())
