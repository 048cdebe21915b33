"""The simulated world and its provider models.

Imports ``engine`` first: that installs the compiled build (``engine.native``) before any
module of this package loads, so the compiled modules never meet interpreted copies of
their neighbours.
"""

import engine  # noqa: F401
