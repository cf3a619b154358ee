import sys

from raibid_gitops.cli import main

sys.exit(main())
