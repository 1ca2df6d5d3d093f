"""rmmvideo: face restoration in video with Restoration with Memorized Modulation (RMM).

Importing this package is cheap: heavy dependencies (torch, av, dlib) are imported by the
modules that need them, never here.
"""

__version__ = "0.1.0"
