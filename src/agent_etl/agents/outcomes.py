"""What the memory-driven selector knows of each agent on each kind of task: ``Outcomes``, the
recency-weighted statistics of one (task kind, agent) pair, kept in process and updated by every
finished branch, so a decision is arithmetic on a few numbers, never a memory query.

- Success is a Beta posterior over discounted counts; throughput a normal posterior over the log of
  rows/s (discounted mean and spread). Each observation first multiplies the older ones by
  ``DISCOUNT``, so about the last ``1 / (1 - DISCOUNT)`` runs count.
- Drift: the last ``WINDOW`` outcomes are also kept apart; when they are too unlikely under the
  long-run estimate (a binomial tail for failures, a z-test for throughput), the older runs are
  dropped and the estimate restarts from the window. A degraded agent is noticed in a few runs
  instead of after the discount has worn its good past away.
- Drift of an agent shows on every kind it runs, so ``AgentDrift`` also watches each agent's last
  runs across kinds against what the kinds' estimates expected of it. When they disagree, the change
  is pooled: its success against the success expected before, and its log throughput against the
  throughput expected before, over the runs that showed it and every run of the agent since, on any
  kind. Each of the agent's estimates is then the one it had before with that change applied,
  weighing as many runs as were pooled (at most ``POOLED``), plus its own runs since; once it has
  ``POOLED`` of those, it is a plain estimate again. A change seen on the kinds the agent still runs
  thus moves its estimates on the kinds it no longer runs, and a false alarm heals as its next runs
  go as before.
- Knowledge goes stale: at decision time the counts of an agent not tried lately on this kind are
  shrunk by ``STALE ** decisions since``, so it is sampled again now and then.
"""

from __future__ import annotations

import math
from collections import deque

DISCOUNT = 0.998
WINDOW = 10
STALE = 0.9998
TRIES = 3  # runs of each capable agent on a kind before sampling starts
P_DRIFT = 1e-3  # how unlikely an agent's runs across kinds must be under their estimates to count as drift
# the same for one kind's window of WINDOW runs: tested after every run of every (kind, agent) pair,
# at 1e-3 a healthy agent's window set its estimate on a kind back to 5 failures in 11 (1 seed in 96
# of benchmarks/selection.py); a real fall (97% -> 40%) shows in one more failure at 1e-4
P_KIND = 1e-4
Z_DRIFT = 4.0
MIN_SPREAD = 0.05
POOLED = 2 * WINDOW  # runs after which a change seen everywhere weighs no more, nor is needed, on a kind
PRIOR_SPREAD = 0.5  # before runs say otherwise: a run may be 1.6x faster or slower than the typical  # log rows/s: runs of one task never agree better than this


class Outcomes:
    """Discounted outcome statistics of one agent on one kind of task."""

    __slots__ = ("n", "ok", "w", "mean", "sq", "recent", "last", "drift", "runs", "sd", "since", "base", "post")

    def __init__(self) -> None:
        self.n = 0.0  # discounted runs
        self.ok = 0.0  # discounted successes
        self.w = 0.0  # discounted runs with a throughput
        self.mean = 0.0  # discounted mean of log(rows/s)
        self.sq = 0.0  # discounted mean of its square
        self.recent: deque[tuple[bool, float | None]] = deque(maxlen=WINDOW)
        self.last = 0  # the kind's decision clock at the last observation
        self.drift = ""  # what the last drift was, for the reasons
        self.since = 0  # the kind's decision clock at the last drift
        self.runs = 0  # runs counted, undiscounted
        self.sd = self.spread  # kept up to date: a decision reads it, never computes it
        # since its agent drifted everywhere: what the estimate was before (log rows/s mean and
        # variance, success), and the runs here since, (runs, successes, speeds, their sum, sum of
        # squares); the estimate is the pooled change applied to ``base``, and these runs, until
        # there are POOLED of them; ``base`` stays while the pool lasts, to tell the change
        self.base: tuple[float, float, float] | None = None
        self.post = [0, 0, 0, 0.0, 0.0]

    @property
    def success(self) -> float:
        """Posterior mean of the success probability (Beta(1, 1) prior)."""
        return (self.ok + 1.0) / (self.n + 2.0)

    @property
    def spread(self) -> float:
        """Standard deviation of log(rows/s) between runs; a few runs are pulled towards ``PRIOR_SPREAD``."""
        var = max(self.sq - self.mean * self.mean, 0.0) if self.w else 0.0
        var = (PRIOR_SPREAD ** 2 * 2.0 + var * self.w) / (2.0 + self.w)
        return max(math.sqrt(var), MIN_SPREAD)

    @property
    def pooling(self) -> bool:
        """Is the estimate the change pooled over the agent's runs everywhere (its own runs here since
        are fewer than ``POOLED``)?"""
        return self.base is not None and self.post[0] < POOLED

    @property
    def speed(self) -> float:
        return math.exp(self.mean) if self.w else 0.0

    def add(self, ok: bool, log_speed: float | None, clock: int = 0) -> str:
        """Count one run; returns a note when it revealed drift (and the past was dropped)."""
        drift = "" if self.pooling else self._drifted(ok, log_speed)
        self._count(ok, log_speed)
        if self.base is not None:
            post = self.post
            post[0] += 1
            post[1] += ok
            if log_speed is not None:
                post[2] += 1
                post[3] += log_speed
                post[4] += log_speed * log_speed
            if post[0] == POOLED:  # enough runs here since the change: the estimate is theirs from now on
                n, ok_, w, total, squares = post
                self.n, self.ok, self.w = float(n), float(ok_), float(w)
                self.mean, self.sq = (total / w, squares / w) if w else (0.0, 0.0)
        self.recent.append((ok, log_speed))
        self.last = clock
        self.runs += 1
        if drift:
            self._restart(self._change(drift))
            self.drift, self.since = drift, clock
        self.sd = self.spread
        return drift

    def suspect(self, note: str, clock: int = 0) -> None:
        """The agent drifted across kinds: from now on the estimate here is the change seen on the
        agent's runs everywhere applied to what it was (``pool``), then its own runs here, until they
        are ``POOLED`` of them."""
        # what the runs that showed it were expected to do: this estimate as it stands (after an
        # earlier drift too, as the pool restarts from those runs)
        var = max(self.sq - self.mean * self.mean, 0.0) if self.w else 0.0
        self.base = (self.mean if self.w else None, var, self.success)
        self.post = [0, 0, 0, 0.0, 0.0]
        self.drift, self.since = note, clock
        self.recent.clear()

    def pool(self, ratio: float, runs: float, shift: float, speeds: float,
             prior: tuple[float, float] = (1.0, 1.0)) -> None:
        """The estimate of a suspect pair: success is the one expected before times ``ratio``, as
        ``runs`` runs (of the agent on any kind since its drift), and the log throughput the one before
        plus ``shift``, as ``speeds`` runs; then this kind's own runs since. ``prior`` is the Beta
        prior decisions add to the counts: the success they see is that one (the prior, typical of the
        kind, would otherwise pull a failing agent's few runs back up)."""
        if not self.pooling:  # its own runs here are enough: a plain estimate, from them
            return
        mean, var, success = self.base
        n, ok, w, total, squares = self.post
        runs, speeds = min(runs, POOLED), min(speeds, POOLED)
        target = (min(success * ratio, 1.0) * runs + ok) / (runs + n) if runs + n else success
        self.n = runs + n
        a0, b0 = prior
        # counts whose posterior mean is the target: fewer successes, or, below what the prior alone
        # gives, more runs without one
        self.ok = target * (self.n + a0 + b0) - a0
        if self.ok < 0.0:
            self.n, self.ok = max(self.n, a0 / max(target, 1e-3) - a0 - b0), 0.0
        self.ok = min(self.ok, self.n)
        if mean is None:  # no throughput before: its own runs only
            speeds = 0.0
            mean = 0.0
        self.w = speeds + w
        if self.w:
            self.mean = (speeds * (mean + shift) + total) / self.w
            own = squares / w - (total / w) ** 2 if w > 1 else var
            self.sq = (speeds * var + w * max(own, 0.0)) / self.w + self.mean * self.mean
        # the spread between runs is known from the runs before (it is the level that changed): not
        # pulled towards PRIOR_SPREAD as a few runs' would be
        self.sd = max(math.sqrt(max(self.sq - self.mean * self.mean, 0.0)), MIN_SPREAD) if speeds else self.spread

    def _count(self, ok: bool, log_speed: float | None) -> None:
        self.n = self.n * DISCOUNT + 1.0
        self.ok = self.ok * DISCOUNT + (1.0 if ok else 0.0)
        if log_speed is not None:
            self.w = self.w * DISCOUNT + 1.0
            self.mean += (log_speed - self.mean) / self.w
            self.sq += (log_speed * log_speed - self.sq) / self.w

    def _change(self, drift: str) -> int:
        """Where in the window the change seems to start: the first failure (or success) when success
        drifted, the first run off by two spreads in the drift's direction when throughput did."""
        window = list(self.recent)
        for i, (ok, speed) in enumerate(window):
            if drift.startswith("success fell") and not ok or drift.startswith("success rose") and ok:
                return i
            if drift.startswith("throughput") and speed is not None and \
                    (speed - self.mean) * (-1 if "fell" in drift else 1) > 2 * self.spread:
                return i
        return 0

    def _restart(self, start: int = 0) -> None:
        recent = list(self.recent)[start:]
        self.recent.clear()
        self.recent.extend(recent)
        self.n = self.ok = self.w = self.mean = self.sq = 0.0
        for ok, speed in recent:
            self._count(ok, speed)

    def _drifted(self, ok: bool, log_speed: float | None) -> str:
        """Does the window, this run included, contradict what the runs before it say?"""
        window = [*self.recent, (ok, log_speed)]
        older = self.n - len(self.recent)  # roughly: the runs before the window
        if older < WINDOW:
            return ""
        p = self.success
        fails = sum(1 for o, _ in window if not o)
        size = len(window)
        if fails > size * (1 - p) and _tail(size, fails, 1 - p) < P_KIND:
            return f"success fell to {1 - fails / size:.0%} over the last {size} runs from {p:.0%}"
        wins = size - fails
        if wins > size * p and _tail(size, wins, p) < P_KIND:
            return f"success rose to {wins / size:.0%} over the last {size} runs from {p:.0%}"
        speeds = [s for _, s in window if s is not None]
        if len(speeds) >= 3 and self.w >= WINDOW:
            m = sum(speeds) / len(speeds)
            z = (m - self.mean) / (self.spread / math.sqrt(len(speeds)))
            if abs(z) > Z_DRIFT:
                return (f"throughput {'fell' if z < 0 else 'rose'} to ~{rate(math.exp(m))} rows/s over the last "
                        f"{len(speeds)} runs from ~{rate(self.speed)}")
        return ""


def _tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _poisson_tail(mean: float, k: int) -> float:
    """P(X >= k) for X ~ Poisson(mean): failures of runs with small, unequal failure probabilities."""
    mean = max(mean, 1e-3)
    return max(0.0, 1.0 - sum(math.exp(-mean) * mean ** i / math.factorial(i) for i in range(k)))


def rate(x: float) -> str:
    """``1.23k``, ``45.6M``: three significant digits in the smallest unit that keeps them under 1,000
    once rounded (999,999.99 is ``1M``, not ``1e+03k``)."""
    if x < 999.5:
        return f"{x:.3g}"
    if x < 999_500:
        return f"{x / 1e3:.3g}k"
    return f"{x / 1e6:.3g}M"


class AgentDrift:
    """The last runs of one agent, on any kind, against what the estimates expected of them; and
    once they disagreed (a drift of the agent, not of one kind), the change seen since, pooled over
    every kind it ran: its success against the success expected of those runs before, and its log
    throughput against the throughput expected."""

    __slots__ = ("runs", "count", "seen", "expected", "offs", "speeds")

    def __init__(self) -> None:
        self.runs: deque[tuple[bool, float, float | None, float | None]] = deque(maxlen=2 * WINDOW)
        self.count = 0  # runs since the drift, pooled
        self.seen = 0.0  # their successes
        self.expected = 0.0  # the successes expected of them before
        self.offs = 0.0  # the sum of their log throughput offsets from the throughput expected before
        self.speeds = 0  # how many had a throughput

    @property
    def ratio(self) -> float:
        """Success since the drift against the success expected before."""
        return (self.seen + 0.5) / (self.expected + 0.5)

    @property
    def shift(self) -> float:
        """Log throughput since the drift against the throughput expected before."""
        return self.offs / self.speeds if self.speeds else 0.0

    def since(self, ok: bool, before: tuple[float | None, float, float], log_speed: float | None) -> None:
        """Pool a run on a kind whose estimate before the drift was ``before`` (``Outcomes.base``)."""
        mean, _, success = before
        self.count += 1
        self.seen += ok
        self.expected += success
        if log_speed is not None and mean is not None:
            self.speeds += 1
            self.offs += log_speed - mean

    def _restart(self, runs: list[tuple[bool, float, float | None, float | None]]) -> None:
        """A drift: the pool restarts from the runs that showed it."""
        self.count = len(runs)
        self.seen = float(sum(1 for r in runs if r[0]))
        self.expected = sum(1.0 - r[1] for r in runs)
        offs = [r[2] for r in runs if r[2] is not None]
        self.offs, self.speeds = sum(offs), len(offs)
        self.runs.clear()

    def add(self, ok: bool, expected: Outcomes | None, log_speed: float | None) -> str:
        """Count a run; a note when the agent's runs no longer match their estimates."""
        if expected is None or expected.n < WINDOW:
            return ""
        off = log_speed - expected.mean if log_speed is not None and expected.w else None
        self.runs.append((ok, 1.0 - expected.success, off, off / expected.spread if off is not None else None))
        # the most telling recent stretch (the change may be a few runs old): its failures against
        # the failures its estimates expected, Bonferroni-corrected for the stretches looked at
        runs = list(self.runs)
        fails, mean, found = 0, 0.0, None
        for length in range(1, len(runs) + 1):
            ok_, failure, _, _ = runs[-length]
            fails += not ok_
            mean += failure
            if fails >= 3 and not ok_:
                p = _poisson_tail(mean, fails) * len(runs)
                if p < P_DRIFT and (found is None or p < found[0]):
                    found = (p, length, fails, mean)
        if found is not None:
            _, length, fails, mean = found
            self._restart(runs[-length:])
            return f"failed {fails} of its last {length} runs where about {mean:.1f} were expected"
        offs = [(i, r[3]) for i, r in enumerate(runs) if r[2] is not None][-WINDOW:]
        total = 0.0
        for length in range(1, len(offs) + 1):
            total += offs[-length][1]
            if length >= 3 and abs(total / math.sqrt(length)) > Z_DRIFT + 1:
                # the change: the runs from the first one off by two spreads in its direction (the
                # stretch may begin with runs from before it, which would dilute it)
                stretch = offs[-length:]
                sign = 1.0 if total > 0 else -1.0
                start = next((i for i, z in stretch if z * sign > 2.0), stretch[0][0])
                self._restart(runs[start:])
                return f"ran {math.exp(self.shift):.2g}x as fast as expected on its last {len(runs) - start} runs"
        return ""
