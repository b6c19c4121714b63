"""A plugin module that fails on import (the registry must survive it)."""

raise ImportError("this plugin needs a library that is not installed")
