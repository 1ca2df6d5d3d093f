import sys

from rmmvideo.cli.main import main

sys.exit(main())
