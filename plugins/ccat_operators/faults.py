"""Whose fault is it: the item's own, or the infrastructure's.

Every stage sorts what goes wrong into two kinds, and treats them differently:

- :class:`ItemFault`: something is wrong with one item itself - its bytes do not match
  its checksum, a tar header of it is malformed, its name or its place in storage is
  unsafe, its source file changed. Trying again does not help: the item fails alone,
  with the message as its stored reason, and the rest of its location carries on.
- :class:`ItemWaits`: nothing is wrong with the item, but it cannot go on now for a
  reason that is its own (no buffer has room for a package of its size): it goes back to
  PENDING with the reason, at no cost, and the others go on.
- anything else is the infrastructure's (a database restart, S3 unreachable, a full
  disk, a killed worker): the item goes back to PENDING at no cost to it, and the error
  is raised so the task retries.
"""

from __future__ import annotations


class ItemFault(Exception):
    """One item is at fault; it fails alone, with this message as its reason."""


class ItemWaits(Exception):
    """One item cannot go on now (not its fault); it waits, PENDING with this message as its reason."""
