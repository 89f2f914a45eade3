"""The wire conventions every Shoal object shares.

Docker's Engine API spells fields in PascalCase and encodes durations as integer nanoseconds;
using the same spelling in the event log means one set of types serves the log, the fold and
the API, with no translation layer to drift out of step.
"""

from __future__ import annotations

import msgspec


class Wire(msgspec.Struct, rename="pascal", omit_defaults=True, kw_only=True, gc=False):
    """Base for Docker-shaped objects: PascalCase on the wire, absent fields left out.

    `gc=False`: these records never form reference cycles, and keeping 100,000 tasks out of the
    cyclic garbage collector's generations saves replay time."""


class Fact(msgspec.Struct, rename="pascal", omit_defaults=True, kw_only=True, frozen=True, gc=False):
    """Base for immutable records on the wire: events and the values inside them that never change."""


class Record(Wire, omit_defaults=False):
    """Base for the objects clients read back (services, tasks, nodes): every field is sent.

    Go clients decode an absent `DesiredState` or `Status.State` as an empty string, so objects the
    API returns never leave a default out; specs, by contrast, keep "absent" distinct from "zero".
    """


class Version(msgspec.Struct, rename="pascal", frozen=True, gc=False):
    """An object's version: the stream sequence of the last event that changed it."""

    index: int = 0


Nanos = int
"""A duration in nanoseconds, as the Engine API carries it."""

Labels = dict[str, str]
