import sys

from midistruct.cli import main

sys.exit(main())
