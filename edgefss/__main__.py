import sys

from edgefss.cli import main

sys.exit(main())
