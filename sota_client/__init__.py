"""SOTA client daemon: a drop-in replacement for the 2016 GENIVI/ATS Garage ``sota_client``."""

__version__ = "0.1.0"

__all__ = ["__version__"]
