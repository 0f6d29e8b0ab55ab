"""Drift coverage: the share of scored events whose window was tested for drift.

Every closed window is tested (merged with others if need be) or reported as not tested with its
reason, so coverage below 100% means windows that could not be tested (too few events, no reference
for the version, a failed test), never windows dropped for lack of CPU. Events in open windows or in
windows waiting for the drift worker are *waiting*: not yet counted either way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Coverage:
    scored: int  # events joined into windows since the monitor started
    tested: int  # of them, events in windows whose drift points are written
    untested: int  # events in windows reported as not tested
    windows_tested: int = 0
    windows_untested: int = 0
    windows_merged: int = 0  # merges of waiting windows

    @property
    def waiting(self) -> int:
        """Events in open windows, waiting windows, or the window under test."""
        return max(0, self.scored - self.tested - self.untested)

    @property
    def share(self) -> float | None:
        """Tested events over the events whose window is through the drift worker (None: none yet)."""
        done = self.tested + self.untested
        return self.tested / done if done else None

    def describe(self) -> str:
        share = f"{self.share:.1%}" if self.share is not None else "-"
        return (
            f"drift coverage {share} ({self.tested:,} of {self.tested + self.untested:,} events tested, "
            f"{self.waiting:,} waiting)"
        )
