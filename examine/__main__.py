import sys

from examine.cli import main

sys.exit(main())
