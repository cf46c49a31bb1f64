"""``max_usd``: a hard budget in dollars for one plugin over a whole run, earlier invocations included.

Each request's worst-case cost is reserved before it is sent; what earlier invocations of the run
spent is read from the run's ``spend.jsonl``, where every priced answer is appended as it arrives.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from ..errors import BudgetExceeded, ConfigError
from ..interfaces import Context

SPEND_FILE = "spend.jsonl"
# Budget comparisons forgive float rounding: five answers of $0.01 fit a budget of $0.05.
BUDGET_SLACK = 1e-9


class Budget:
    """What one plugin (``field``) has spent in a run, and how much of ``max_usd`` is held by requests in flight."""

    def __init__(self, field: str, max_usd: float | None, context: Context):
        self.field = field
        self.max_usd = max_usd
        self.context = context
        self.spent_here = 0.0  # this invocation's spend
        self.blocked_need = 0.0  # the worst case of the request the budget could not cover
        self._spent_before: float | None = None
        self._reserved = 0.0
        self._holders = 0
        self._spent_out = False
        self._changed: asyncio.Condition | None = None

    @property
    def spend_file(self) -> Path | None:
        run_dir = self.context.run_dir
        return Path(run_dir) / SPEND_FILE if run_dir is not None else None

    def spent(self) -> float:
        """Dollars spent through this plugin in the run: earlier invocations (``spend.jsonl``) and this one."""
        if self._spent_before is None:
            self._spent_before = read_spend(self.spend_file, self.field)
        return self._spent_before + self.spent_here

    def record(self, cost: float) -> None:
        """Count an answer's cost, and append it to the run's spend record."""
        self.spent()  # the earlier invocations' spend is read before this answer's is added
        self.spent_here += cost
        path = self.spend_file
        if cost > 0 and path is not None and path.parent.is_dir():
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"field": self.field, "usd": cost}) + "\n")

    def record_shared(self, cost: float) -> None:
        """An answer another run on the cache paid for while this one waited: nothing spent here, and the
        spend record says so."""
        path = self.spend_file
        if cost > 0 and path is not None and path.parent.is_dir():
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"field": self.field, "usd": 0.0, "paid_by_another_run": cost}) + "\n")

    def room(self) -> float:
        """Dollars left, with the rounding slack."""
        return self.max_usd * (1 + BUDGET_SLACK) - self.spent()

    def block(self, need: float) -> None:
        """The budget cannot cover a request of ``need`` dollars: remembered for the message."""
        self.blocked_need = need

    def exceeded(self, answered: int, total: int) -> BudgetExceeded:
        earlier = self._spent_before or 0.0
        before = f" (${dollars(earlier)} of it in earlier invocations)" if earlier > 0 else ""
        need = f", and the next request could cost up to ${dollars(self.blocked_need)}" if self.blocked_need else ""
        return BudgetExceeded(
            f"{self.field}.max_usd: this run's budget of ${dollars(self.max_usd)} cannot cover another request: "
            f"${dollars(self.spent())} spent{before}{need}. {answered} of {total} answers are cached and are not paid "
            f"for again; raise {self.field}.max_usd to continue")

    # -- requests in flight, within one event loop -----------------------------------------------
    def open(self) -> None:
        """Start a round of concurrent requests (a new event loop)."""
        self._changed = asyncio.Condition()
        self._spent_out = False

    async def reserve(self, need: float) -> bool:
        """Hold ``need`` dollars; False when they cannot be covered even with nothing in flight."""
        async with self._changed:
            while True:
                if self._spent_out:
                    return False
                if self.spent() + self._reserved + need <= self.max_usd * (1 + BUDGET_SLACK):
                    self._reserved += need
                    self._holders += 1
                    return True
                if not self._holders:  # else in-flight requests may come in under their worst case: wait for them
                    self._spent_out = True
                    self.block(need)
                    self._changed.notify_all()
                    return False
                await self._changed.wait()

    async def release(self, need: float) -> None:
        async with self._changed:
            self._reserved -= need
            self._holders -= 1
            if not self._holders:
                self._reserved = 0.0  # no float residue
            self._changed.notify_all()


def dollars(usd: float) -> str:
    """An amount with at least 4 decimals and 2 significant digits: $0.0500, $0.000040, not $0.0000."""
    if usd <= 0 or usd >= 0.001:
        return f"{usd:.4f}"
    return f"{usd:.{1 - math.floor(math.log10(usd))}f}"


def read_spend(path: Path | None, field: str) -> float:
    """Dollars ``field`` spent in the run's earlier invocations; a line cut short by a kill is skipped."""
    if path is None or not path.exists():
        return 0.0
    total = 0.0
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if row["field"] == field:
                total += float(row["usd"])
        except (ValueError, KeyError, TypeError):
            if number == len(lines):  # the last line, without its newline: the write a kill interrupted
                continue
            raise ConfigError(f"{path}: line {number} is not a spend record; the run's spend so far cannot be "
                              "known. Restore the file, or delete it to count the budget from zero") from None
    return total
