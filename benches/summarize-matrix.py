#!/usr/bin/env python3
"""Prints the runs of a benches/run-matrix.sh directory and their medians against issue 7's targets.

Usage: benches/summarize-matrix.py DIR [--markdown]

A target on CPU or latency is judged on the median over the rounds (these machines are noisy;
every run is listed beside it, with how many of them were within the line on their own). Loss,
gaps and duplicates must be zero in every run of the target scenarios. Exit status 1 when a
target is missed.
"""

import json
import pathlib
import re
import statistics
import sys


def load(directory):
    """{(scenario, round): {"tickfan": report, "baseline": report}} from NAME-ROUND-WHO.json."""
    runs = {}
    for path in sorted(directory.glob("*.json")):
        m = re.fullmatch(r"(\w+)-(\w+)-(tickfan|baseline)\.json", path.name)
        if not m:
            continue
        text = path.read_text().strip()
        if not text:
            continue
        runs.setdefault((m[1], m[2]), {})[m[3]] = json.loads(text)
    return runs


def rounds_of(runs, scenario):
    """The numbered rounds of a scenario, in order (not the heavy rate search)."""
    keys = [r for (s, r) in runs if s == scenario and r.isdigit()]
    return [runs[(scenario, r)] for r in sorted(keys, key=int)]


def clean(report):
    return report["lost"] == 0 and report["gaps"] == 0 and report["duplicates"] == 0


def fmt(values, digits):
    return ", ".join(f"{v:.{digits}f}" for v in values)


class Verdicts:
    """Collects one row per target: what was measured, the median, met or not."""

    def __init__(self):
        self.rows = []

    def check(self, target, values, limit, digits, unit, below=True, every_run_clean=True):
        if not values:
            return  # the scenario was not in this matrix (SCENARIOS)
        median = statistics.median(values)
        within = sum(1 for v in values if (v <= limit if below else v >= limit))
        met = (median <= limit if below else median >= limit) and every_run_clean
        runs = f"{fmt(values, digits)} ({within} of {len(values)} within)"
        self.rows.append((target, runs, f"{median:.{digits}f}{unit}", met))


def summarize(directory, markdown):
    runs = load(directory)
    meta = (directory / "meta.txt").read_text() if (directory / "meta.txt").exists() else ""
    out = [meta.rstrip(), ""]
    v = Verdicts()

    for name in ("light", "moderate"):
        pairs = [r for r in rounds_of(runs, name) if "tickfan" in r and "baseline" in r]
        ok = all(clean(r["tickfan"]) and clean(r["baseline"]) for r in pairs)
        if pairs:
            out.append(f"{name}: tickfan user / total µs per delivery (baseline's), ratio, lost")
        for r in pairs:
            t, b = r["tickfan"], r["baseline"]
            out.append(
                f"  {t['userUsPerDelivery']:.3f} / {t['totalUsPerDelivery']:.2f}"
                f" ({b['userUsPerDelivery']:.3f} / {b['totalUsPerDelivery']:.2f}),"
                f" {t['totalUsPerDelivery'] / b['totalUsPerDelivery']:.2f}x,"
                f" lost {t['lost']} ({b['lost']}), p99 {t['latencyMs']['p99']:.2f} ms"
            )
        ratios = [r["tickfan"]["totalUsPerDelivery"] / r["baseline"]["totalUsPerDelivery"] for r in pairs]
        users = [r["tickfan"]["userUsPerDelivery"] for r in pairs]
        v.check(f"{name}: total CPU per delivery <= 1.1x baseline", ratios, 1.1, 2, "x", every_run_clean=ok)
        v.check(f"{name}: user CPU per delivery <= 0.5 µs", users, 0.5, 3, " µs", every_run_clean=ok)

    heavy = [r for r in rounds_of(runs, "heavy") if "tickfan" in r]
    if heavy:
        out.append("heavy: tickfan total µs per delivery (baseline's), lost, p99 ms")
    for r in heavy:
        t, b = r["tickfan"], r.get("baseline")
        base = f" ({b['totalUsPerDelivery']:.2f})" if b else ""
        out.append(f"  {t['totalUsPerDelivery']:.2f}{base}, lost {t['lost']}, p99 {t['latencyMs']['p99']:.2f}")
    ok = all(clean(r["tickfan"]) for r in heavy)
    v.check("heavy: zero loss, p99 < 10 ms at 400k deliveries/s", [r["tickfan"]["latencyMs"]["p99"] for r in heavy], 10, 2, " ms", every_run_clean=ok)

    rates = sorted(
        ((int(r[4:]), runs[("heavy", r)]["tickfan"]) for (s, r) in runs if s == "heavy" and r.startswith("rate")),
        key=lambda x: x[0],
    )
    if rates:
        out.append("heavy rate search: msg/s, deliveries/s, lost, p99 ms, server µs per delivery")
        for rate, t in rates:
            out.append(
                f"  {rate}, {t['deliveriesPerSec']:.0f}, lost {t['lost']}, p99 {t['latencyMs']['p99']:.2f},"
                f" {t['totalUsPerDelivery']:.3f}"
            )
        zero = [rate for rate, t in rates if clean(t)]
        out.append(f"  highest rate tried with zero loss: {max(zero) if zero else 'none'} msg/s")

    bc = [r["tickfan"] for r in rounds_of(runs, "broadcast") if "tickfan" in r]
    if bc:
        out.append("broadcast (2 workers unpinned): p99 ms, lost")
    out.extend(f"  {t['latencyMs']['p99']:.1f}, lost {t['lost']}" for t in bc)
    v.check("broadcast, 2 workers: p99 < 60 ms", [t["latencyMs"]["p99"] for t in bc], 60, 1, " ms",
            every_run_clean=all(clean(t) for t in bc))

    cn = [r["tickfan"] for r in rounds_of(runs, "connect") if "tickfan" in r]
    if cn:
        out.append("connect: connected, handshakes/s, handshake p99 ms, bytes per idle connection")
    out.extend(
        f"  {t['connected']}, {t['handshakesPerSec']:.0f}, {t['handshakeMs']['p99']:.1f}, {t['rssPerConnectionBytes']:.0f}"
        for t in cn
    )
    full = all(t["connected"] == t["subscribers"] for t in cn)
    v.check("connect: >= 5,000 handshakes/s", [t["handshakesPerSec"] for t in cn], 5000, 0, "/s", below=False, every_run_clean=full)
    v.check("connect: handshake p99 < 100 ms", [t["handshakeMs"]["p99"] for t in cn], 100, 1, " ms", every_run_clean=full)
    v.check("connect: <= 1 KiB per idle connection at 15,000", [t["rssPerConnectionBytes"] for t in cn], 1024, 0, " B", every_run_clean=full)

    out.append("")
    if markdown:
        out.append("| target | runs | median | met |")
        out.append("|---|---|---|---|")
        out.extend(f"| {t} | {r} | {m} | {'yes' if ok else '**no**'} |" for t, r, m, ok in v.rows)
    else:
        out.append("targets (median over the rounds; zero loss in every run):")
        out.extend(f"  {'met   ' if ok else 'MISSED'} {t}: median {m}; runs {r}" for t, r, m, ok in v.rows)
    print("\n".join(out))
    return all(ok for _, _, _, ok in v.rows)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(0 if summarize(pathlib.Path(sys.argv[1]), "--markdown" in sys.argv[2:]) else 1)
