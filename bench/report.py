"""bench/run.py's tables: every figure in us (or ms) and as a ratio to nginx measured in the
same run, plus the summary of issue 7's targets with met/missed.

Absolute times on a shared VM drift by 2x from hour to hour, so the targets are ratios to
nginx (a fixed reference proxy) in the same run, targets alternating within each round. The
detail tables show each cell's median round; the summary takes each figure (and each ratio)
per round, from runs a few seconds apart, then the median over rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

NAN = float("nan")
REFERENCE = "nginx"
PACED = ("pstream", "pstream_half")  # chunk C's pair: --paced-chunks N and N//2 paced token chunks


@dataclass
class Row:
    scenario: str
    concurrency: int
    target: str              # "direct" or a target name
    summary: dict
    gw_cpu_s: float = 0.0
    gw_cpu_sched_s: float = 0.0
    backend_cpu_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    core_busy_s: dict = field(default_factory=dict)   # per core, whole machine, over the window
    gw_core: int = 0
    load_core: int = 1
    gw_stime_s: float = 0.0
    round: int = 0

    @property
    def gw_sys_pct(self) -> float:
        return self.gw_stime_s / self.gw_cpu_s * 100 if self.gw_cpu_s else NAN

    @property
    def foreign_gw_core_pct(self) -> float:
        """CPU used on the proxy's core by processes that are not ours (other work on the machine)."""
        return (self.core_busy_s.get(self.gw_core, 0.0) - self.gw_cpu_s) / self.summary["duration_s"] * 100

    @property
    def foreign_load_core_pct(self) -> float:
        ours = self.backend_cpu_s + self.loadgen_cpu_s
        return (self.core_busy_s.get(self.load_core, 0.0) - ours) / self.summary["duration_s"] * 100

    @property
    def gw_us_per_req(self) -> float:
        n = self.summary["requests"]
        return self.gw_cpu_s / n * 1e6 if n and self.target != "direct" else NAN

    @property
    def gw_core_pct(self) -> float:
        return self.gw_cpu_s / self.summary["duration_s"] * 100

    @property
    def load_core_pct(self) -> float:
        return (self.backend_cpu_s + self.loadgen_cpu_s) / self.summary["duration_s"] * 100

    def as_json(self) -> dict:
        return {"target": self.target, "round": self.round, "gw_cpu_s": self.gw_cpu_s,
                "gw_cpu_sched_s": self.gw_cpu_sched_s, "gw_us_per_req": self.gw_us_per_req,
                "gw_stime_s": self.gw_stime_s, "backend_cpu_s": self.backend_cpu_s,
                "loadgen_cpu_s": self.loadgen_cpu_s, "foreign_gw_core_pct": self.foreign_gw_core_pct,
                "foreign_load_core_pct": self.foreign_load_core_pct, **self.summary}


Runs = dict[tuple[str, str, int], dict[int, Row]]  # (scenario, target, concurrency) -> round -> row


def fmt(v: float, digits: int = 2) -> str:
    return "-" if v != v else f"{v:.{digits}f}"  # NaN -> "-"


def ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else NAN


def xfmt(v: float, ref: float, digits: int = 0) -> str:
    """A figure and its ratio to the reference: `313 (12.0x)`."""
    r = ratio(v, ref)
    return fmt(v, digits) + ("" if r != r else f" ({r:.1f}x)")


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else NAN


def median_row(rows: list[Row]) -> Row:
    """A cell's median round, chosen on the cell's main figure so one row's numbers stay
    consistent with each other: proxy CPU/request, direct req/s, or for the model-like stream
    the time to first token."""
    if rows[0].scenario == "real":
        key: Callable[[Row], float] = lambda r: r.summary["ttfc_p50_ms"]  # noqa: E731
    elif rows[0].target == "direct":
        key = lambda r: r.summary["rps"]  # noqa: E731
    else:
        key = lambda r: r.gw_us_per_req  # noqa: E731
    ordered = sorted(rows, key=key)
    return ordered[(len(ordered) - 1) // 2]


class Tables:
    """Median rows of a run, looked up by cell; prints the detail tables."""

    def __init__(self, runs: Runs, targets: list[str], chunks: int, slope_c: int, paced_ms: float,
                 real_c: int, real_tokens: int, paced_chunks: int) -> None:
        self.runs = runs
        self.targets = targets
        self.chunks, self.slope_c, self.paced_ms = chunks, slope_c, paced_ms
        self.paced_chunks = paced_chunks  # pstream's length (pstream_half: half), for chunk C
        self.real_c, self.real_tokens = real_c, real_tokens
        self.rows = [median_row(list(v.values())) for v in runs.values()]
        self.by = {(r.target, r.scenario, r.concurrency): r for r in self.rows}

    def cpu(self, t: str, sc: str, c: int) -> float:
        r = self.by.get((t, sc, c))
        return r.gw_us_per_req if r else NAN

    def stat(self, t: str, sc: str, c: int, key: str) -> float:
        r = self.by.get((t, sc, c))
        return r.summary[key] if r else NAN

    def added(self, t: str, sc: str, c: int, key: str = "p50_ms") -> float:
        return self.stat(t, sc, c, key) - self.stat("direct", sc, c, key)

    def chunk_b(self, t: str) -> float:
        return (self.cpu(t, "stream", self.slope_c) - self.cpu(t, "stream0", self.slope_c)) / self.chunks

    def chunk_c(self, t: str) -> float:
        half = self.paced_chunks // 2
        paced = self.cpu(t, "pstream", self.slope_c) - self.cpu(t, "pstream_half", self.slope_c)
        return paced / (self.paced_chunks - half)

    def all_rows(self) -> list[str]:
        out = ["| scenario | conc | target | req/s | x direct | p50 ms (x direct) | p99 ms | +p50 ms | TTFC p50 ms "
               "| proxy CPU us/req (sys %) | CPU x nginx | proxy core % | load core % "
               "| other procs on proxy/load core % "
               "| reads/req | errors |",
               "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            s = r.summary
            d = self.by.get(("direct", r.scenario, r.concurrency))
            proxy = r.target != "direct"
            rps_x = ratio(s["rps"], d.summary["rps"]) if proxy and d else NAN
            added = s["p50_ms"] - d.summary["p50_ms"] if proxy and d else NAN
            p50_x = f" ({fmt(ratio(s['p50_ms'], d.summary['p50_ms']), 1)}x)" if proxy and d else ""
            cpu = f"{fmt(r.gw_us_per_req, 0)} ({fmt(r.gw_sys_pct, 0)})" if proxy else "-"
            cpu_x = fmt(ratio(r.gw_us_per_req, self.cpu(REFERENCE, r.scenario, r.concurrency))) if proxy else "-"
            out.append(
                f"| {r.scenario} | {r.concurrency} | {r.target} | {s['rps']:.0f} | {fmt(rps_x)} "
                f"| {fmt(s['p50_ms'], 3)}{p50_x} | {fmt(s['p99_ms'], 3)} | {fmt(added, 3)} "
                f"| {fmt(s['ttfc_p50_ms'], 3)} | {cpu} | {cpu_x} | {fmt(r.gw_core_pct, 0) if proxy else '-'} "
                f"| {fmt(r.load_core_pct, 0)} | {fmt(r.foreign_gw_core_pct, 0)} / {fmt(r.foreign_load_core_pct, 0)} "
                f"| {fmt(s['reads_per_req'], 1)} | {s['errors']} |")
        return out

    def per_request(self) -> list[str]:
        concs = sorted({r.concurrency for r in self.rows if r.scenario == "chat"})
        if not concs:
            return []
        out = ["", f"Proxy CPU per request and per streamed chunk ({self.chunks} chunks/stream), in us and "
               "(x nginx in this run); added latency over direct in ms, nginx's beside it.", "",
               "| target | conc | us/non-stream req | us/stream req | us/chunk A = (stream-chat)/N "
               "| added p50 chat ms (nginx) | added p50 stream ms (nginx) | added TTFC p50 stream ms (nginx) |",
               "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for t in self.targets:
            for c in concs:
                a = (self.cpu(t, "stream", c) - self.cpu(t, "chat", c)) / self.chunks
                ref_a = (self.cpu(REFERENCE, "stream", c) - self.cpu(REFERENCE, "chat", c)) / self.chunks
                lat = " | ".join(f"{fmt(self.added(t, sc, c, k), 3)} ({fmt(self.added(REFERENCE, sc, c, k), 3)})"
                                 for sc, k in (("chat", "p50_ms"), ("stream", "p50_ms"), ("stream", "ttfc_p50_ms")))
                out.append(f"| {t} | {c} | {xfmt(self.cpu(t, 'chat', c), self.cpu(REFERENCE, 'chat', c))} "
                           f"| {xfmt(self.cpu(t, 'stream', c), self.cpu(REFERENCE, 'stream', c))} "
                           f"| {xfmt(a, ref_a, 1)} | {lat} |")
        return out

    def slopes(self) -> list[str]:
        if not any(sc in ("stream0", *PACED) for (_, sc, _) in self.by):
            return []
        n, paced, c = self.chunks, self.paced_chunks, self.slope_c
        half = paced // 2
        out = ["", f"Marginal cost of one chunk at c={c}, us (x nginx). B: back-to-back chunks, N={n} vs 0 "
               f"token chunks. C: paced ({self.paced_ms:g} ms between chunks, each chunk read and relayed alone, "
               f"like tokens), N={paced} vs {half} (--paced-chunks):", "",
               f"| target | us/stream {n} | us/stream 0 | us/chunk B | us/paced stream {paced} "
               f"| us/paced stream {half} | us/chunk C (paced) | reads/req paced {paced} |",
               "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for t in self.targets:
            cells = [xfmt(self.cpu(t, sc, c), self.cpu(REFERENCE, sc, c)) for sc in ("stream", "stream0")]
            cells.append(xfmt(self.chunk_b(t), self.chunk_b(REFERENCE), 1))
            cells += [xfmt(self.cpu(t, sc, c), self.cpu(REFERENCE, sc, c)) for sc in PACED]
            cells.append(xfmt(self.chunk_c(t), self.chunk_c(REFERENCE), 1))
            cells.append(fmt(self.stat(t, "pstream", c, "reads_per_req"), 1))
            out.append(f"| {t} | " + " | ".join(cells) + " |")
        return out

    def real(self) -> list[str]:
        c = self.real_c
        d = self.by.get(("direct", "real", c))
        if d is None:
            return []
        out = ["", f"Model-like streams at c={c} ({self.real_tokens} tokens/stream, see --real-*): throughput "
               "and time to first token (TTFT: first body bytes = first token, not the headers).", "",
               "| target | req/s | x direct | TTFT p50 ms | +TTFT p50 ms | TTFT p99 ms | +TTFT p99 ms | p50 ms "
               "| proxy CPU us/stream (x nginx) | us/token | errors |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for t in ["direct", *self.targets]:
            r = self.by.get((t, "real", c))
            if r is None:
                continue
            s = r.summary
            proxy = t != "direct"

            def dash(v: float, n: int = 3, proxy: bool = proxy) -> str:
                return fmt(v, n) if proxy else "-"
            out.append(f"| {t} | {s['rps']:.1f} | {dash(ratio(s['rps'], d.summary['rps']))} "
                       f"| {fmt(s['ttfc_p50_ms'], 3)} | {dash(self.added(t, 'real', c, 'ttfc_p50_ms'))} "
                       f"| {fmt(s['ttfc_p99_ms'], 3)} | {dash(self.added(t, 'real', c, 'ttfc_p99_ms'))} "
                       f"| {fmt(s['p50_ms'], 1)} "
                       f"| {xfmt(r.gw_us_per_req, self.cpu(REFERENCE, 'real', c)) if proxy else '-'} "
                       f"| {dash(r.gw_us_per_req / self.real_tokens, 1)} | {s['errors']} |")
        return out


@dataclass(frozen=True)
class Goal:
    """One of issue 7's targets. `kind`: `x_nginx` (value / nginx's <= limit), `over_nginx`
    (value - nginx's <= limit), `at_least` / `at_most` (the value itself)."""

    what: str
    kind: str
    limit: float
    value: Callable[[str, int], float]                   # (target, round) -> figure
    direct: Callable[[int], float] = lambda r: NAN       # the direct figure beside it, if any
    unit: str = "us"

    def goal_text(self) -> str:
        return {"x_nginx": f"<= {self.limit:g}x nginx", "over_nginx": f"<= nginx + {self.limit:g} {self.unit}",
                "at_least": f">= {self.limit:g}", "at_most": f"<= {self.limit:g} {self.unit}"}[self.kind]


def goals(runs: Runs, chunks: int, slope_c: int, real_c: int, paced_chunks: int) -> list[Goal]:
    """`chunks`: the back-to-back stream's length (issue 7's 20-chunk stream); `paced_chunks`:
    pstream's (pstream_half's is half), chunk C's pair."""
    def get(t: str, sc: str, c: int, r: int, key: str) -> float:
        row = runs.get((sc, t, c), {}).get(r)
        if row is None:
            return NAN
        return row.gw_us_per_req if key == "cpu" else row.summary[key]

    half = paced_chunks // 2

    def chunk_c(t: str, r: int) -> float:
        paced = get(t, "pstream", slope_c, r, "cpu") - get(t, "pstream_half", slope_c, r, "cpu")
        return paced / (paced_chunks - half)

    def added(sc: str, c: int, key: str) -> Callable[[str, int], float]:
        return lambda t, r: get(t, sc, c, r, key) - get("direct", sc, c, r, key)

    return [
        Goal("CPU per non-stream request, c=16", "x_nginx", 5.0, lambda t, r: get(t, "chat", 16, r, "cpu")),
        Goal(f"CPU per {chunks}-chunk stream, c=16", "x_nginx", 5.0, lambda t, r: get(t, "stream", 16, r, "cpu")),
        Goal(f"CPU per paced token (chunk C, {paced_chunks} vs {half}, c={slope_c})", "x_nginx", 2.0, chunk_c),
        Goal("added p50 at c=1, non-stream", "over_nginx", 0.15, added("chat", 1, "p50_ms"),
             lambda r: get("direct", "chat", 1, r, "p50_ms"), unit="ms"),
        Goal(f"model-like streams c={real_c}: req/s ratio to direct", "at_least", 0.99,
             lambda t, r: ratio(get(t, "real", real_c, r, "rps"), get("direct", "real", real_c, r, "rps")),
             lambda r: get("direct", "real", real_c, r, "rps"), unit=""),
        Goal(f"model-like streams c={real_c}: added TTFT p50", "at_most", 1.0, added("real", real_c, "ttfc_p50_ms"),
             lambda r: get("direct", "real", real_c, r, "ttfc_p50_ms"), unit="ms"),
        Goal(f"model-like streams c={real_c}: added TTFT p99 (no target)", "info", NAN,
             added("real", real_c, "ttfc_p99_ms"), lambda r: get("direct", "real", real_c, r, "ttfc_p99_ms"),
             unit="ms"),
    ]


def summary(runs: Runs, targets: list[str], chunks: int, slope_c: int, real_c: int,
            paced_chunks: int) -> tuple[list[str], list[dict]]:
    """Issue 7's targets per target: medians over rounds of each figure and of each per-round
    comparison with nginx, and whether the goal is met."""
    rounds = sorted({r for cell in runs.values() for r in cell})
    has_ref = REFERENCE in targets
    out = ["", f"Issue 7 targets (medians over {len(rounds)} round(s) of per-round figures and ratios; "
           "direct and nginx measured in the same rounds):", "",
           "| target | figure | goal | direct | nginx | this target | vs nginx | met? |",
           "|---|---|---|---:|---:|---:|---:|---|"]
    records: list[dict] = []
    for t in [x for x in targets if x != REFERENCE] or targets:
        for g in goals(runs, chunks, slope_c, real_c, paced_chunks):
            value = median([g.value(t, r) for r in rounds])
            ref = median([g.value(REFERENCE, r) for r in rounds]) if has_ref else NAN
            direct = median([g.direct(r) for r in rounds])
            vs_ratio = median([ratio(g.value(t, r), g.value(REFERENCE, r)) for r in rounds]) if has_ref else NAN
            vs_diff = median([g.value(t, r) - g.value(REFERENCE, r) for r in rounds]) if has_ref else NAN
            if g.kind == "x_nginx":
                judged, vs = vs_ratio, (f"{fmt(vs_ratio)}x" if vs_ratio == vs_ratio else "-")
            elif g.kind == "over_nginx":
                judged, vs = vs_diff, f"{vs_diff:+.3f} {g.unit}" if vs_diff == vs_diff else "-"
            else:
                judged, vs = value, (f"{vs_diff:+.3f} {g.unit}".strip() if vs_diff == vs_diff else "-")
            if judged != judged or g.kind == "info":
                met = "not measured" if judged != judged else "-"
            elif g.kind == "at_least":
                met = "**met**" if judged >= g.limit else "missed"
            else:
                met = "**met**" if judged <= g.limit else "missed"
            digits = 3 if g.unit == "ms" or g.kind == "at_least" else 1
            out.append(f"| {t} | {g.what} ({g.unit or 'x direct'}) | {g.goal_text() if g.kind != 'info' else '-'} "
                       f"| {fmt(direct, 3)} | {fmt(ref, digits)} | {fmt(value, digits)} | {vs} | {met} |")
            records.append({"target": t, "figure": g.what, "unit": g.unit, "goal": g.goal_text() if g.kind != "info"
                            else None, "direct": direct, "nginx": ref, "value": value, "x_nginx": vs_ratio,
                            "minus_nginx": vs_diff, "met": met.strip("*")})
    if not has_ref:
        out.append("")
        out.append("(nginx was not among --targets: the goals relative to nginx cannot be judged)")
    return out, records


OPERATIONS_ON, OPERATIONS_OFF = "seadragon", "seadragon-off"
OPERATIONS_LIMIT = 1.15


def operations_summary(runs: Runs, targets: list[str]) -> list[str]:
    """Issue 8's check, when both builds ran: CPU per request with the operator features on
    over the same build with them off, as the median of per-round ratios (the two ran in the
    same round, so an hour's drift cancels), for each cell both measured."""
    if OPERATIONS_ON not in targets or OPERATIONS_OFF not in targets:
        return []
    out = ["", f"Issue 8: CPU per request, {OPERATIONS_ON} (metrics, usage log, rate limits on) over "
           f"{OPERATIONS_OFF} (all three off), median of per-round ratios:", "",
           "| scenario | conc | off us | on us | on / off | met (<= 1.15x)? |", "|---|---:|---:|---:|---:|---|"]
    for (scenario, target, conc), on in sorted(runs.items()):
        off = runs.get((scenario, OPERATIONS_OFF, conc))
        if target != OPERATIONS_ON or off is None:
            continue
        rounds = sorted(set(on) & set(off))
        if not rounds:
            continue
        x = median([ratio(on[r].gw_us_per_req, off[r].gw_us_per_req) for r in rounds])
        out.append(f"| {scenario} | {conc} | {fmt(median([off[r].gw_us_per_req for r in rounds]), 1)} "
                   f"| {fmt(median([on[r].gw_us_per_req for r in rounds]), 1)} | {x:.3f}x "
                   f"| {'**met**' if x <= OPERATIONS_LIMIT else 'missed'} |")
    return out

