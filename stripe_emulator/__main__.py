"""``python -m stripe_emulator --port 12111``"""

import sys

from stripe_emulator.server import main

sys.exit(main())
