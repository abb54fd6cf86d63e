import sys

from ecad.cli import main

sys.exit(main())
