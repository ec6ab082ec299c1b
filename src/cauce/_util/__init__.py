"""Private helpers shared by every layer: atomic files, locks, signals, ``/proc``, YAML.

The lowest layer of cauce: it imports nothing from cauce except :mod:`cauce.errors`.
"""
