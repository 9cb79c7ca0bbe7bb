import sys

from swell_cli.main import main

sys.exit(main())
