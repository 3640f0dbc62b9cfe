from edgeml.cli import _entry

_entry()
