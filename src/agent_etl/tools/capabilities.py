"""What a loader's destination can do, declared once per loader class (``Loader.capabilities``).

Modelled on dlt's destination capabilities: the runtime and the contract tests (``tests/contract``)
read these flags instead of asking which tool a loader is, so a new destination says what it
guarantees in one place and is tested for exactly that. A flag is a promise the contract suite
checks; leave it False when the destination cannot keep it (a message broker cannot take back what
it published, so it is not ``all_or_nothing``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    # values the loader's ``mode`` option takes; a loader without a ``mode`` option that rewrites its
    # output whole on every load (the file loaders) says ("replace",), one that only adds ("append",)
    modes: tuple[str, ...] = ("append",)
    # a commit unit and its checkpoint land together or not at all (one database transaction)
    transactions: bool = False
    # append and merge commit in units (``commit_every``; ``Loader.takes_units``), each with its checkpoint
    commit_units: bool = False
    # with sibling loads to commit with, a unit is prepared before the barrier and committed after
    # it (XA, PREPARE TRANSACTION), so a crash between the two is settled on the next run
    two_phase: bool = False
    # ``schema_policy: evolve`` adds the columns a stream brings (nullable), ``freeze`` refuses any drift
    schema_evolution: bool = False
    # ``committed()`` and ``mark()`` read the checkpoint back from the destination
    checkpoints: bool = False
    # every commit's checkpoint stays (a table of them); False: only the last load's (a manifest)
    checkpoint_history: bool = False
    # a replace swaps the new data in at once: a reader sees the old data or the new, never a mix
    # or nothing, and a replace whose stream fails leaves the old data
    atomic_replace: bool = False
    # a stream that fails before its first commit leaves the destination as it was
    all_or_nothing: bool = False

    @property
    def merge(self) -> bool:
        """``mode: merge`` with ``key``: upsert, the last row of a key wins."""
        return "merge" in self.modes


# the database loaders: tables in a database with transactions (tools.databases.sink)
DATABASE = Capabilities(modes=("append", "replace", "merge"), transactions=True, commit_units=True,
                        schema_evolution=True, checkpoints=True, checkpoint_history=True, atomic_replace=True,
                        all_or_nothing=True)
# the file loaders: a file (or directory) written under a temporary name and renamed into place,
# with a manifest of the last load next to it
FILE = Capabilities(modes=("replace",), checkpoints=True, atomic_replace=True, all_or_nothing=True)
