"""Turn a `make bench` result dict into its table, its target verdicts and docs/performance.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scenarios import (
    BESIDE_GRPC,
    COMPILED_OFF,
    GRPC_CEILING,
    MLSERVER,
    MODELPORT,
    NO_BATCHING,
    OBS_ALL,
    OBS_ALL_FLAGS,
    OBS_OFF,
    OBS_OFF_FLAGS,
    OBS_ON,
    OBS_ON_FLAGS,
    OVERLOAD_CLOSED,
    OVERLOAD_CONNECTIONS,
    OVERLOAD_FLAGS,
    SOAK,
    SOAK_LOAD,
    SOAK_SAMPLE,
    SOAK_SECONDS,
)

Results = dict[str, Any]


def _find(results: Results, scenario: str, server: str) -> dict[str, Any] | None:
    for row in results["loads"]:
        if row["scenario"] == scenario and row["server"] == server:
            return row
    return None


def size(mb: float) -> str:
    """A file size for people: kB below 0.1 MB."""
    return f"{mb * 1000:.1f} kB" if mb < 0.1 else f"{mb:,.1f} MB"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table_rows(results: Results) -> list[list[str]]:
    """Header plus one row per load and server; p50/p99 in ms; ratio = req/s over MLServer's;
    rows/call = mean rows per model call (from /metrics, so none where metrics are off)."""
    rows = [["scenario", "server", "req/s", "p50 ms", "p99 ms", "rows/call", "ratio"]]
    for r in results["loads"]:
        failed = r["failed"]
        rows.append(
            [
                r["scenario"],
                r["server"],
                f"FAILED: {failed}" if failed else _num(r["rps"], ",.0f"),
                _num(r["p50_ms"], ".1f"),
                _num(r["p99_ms"], ".1f"),
                _num(r.get("rows_per_call"), ".1f"),
                _num(r["ratio"], ".2f") + ("x" if r["ratio"] is not None else ""),
            ]
        )
    return rows


def other_rows(results: Results) -> list[list[str]]:
    """Header plus start-to-ready and memory figures."""
    rows = [["measure", "server", "value", "runs"]]
    for s in results["start_to_ready"]:
        value = f"FAILED: {s['failed']}" if s["failed"] else f"{s['median_s']:.2f} s"
        runs = ", ".join(f"{x:.2f}" for x in s["runs_s"])
        rows.append([f"start-to-ready ({s['what']})", s["server"], value, runs])
    for m in results["memory"]:
        value = f"FAILED: {m['failed']}" if m["failed"] else f"{m['pss_mb']:,.0f} MB"
        procs = f"{m['processes']} process(es)" if "processes" in m else ""
        rows.append([f"total PSS ({m['what']})", m["server"], value, procs])
    return rows


def text_table(rows: list[list[str]]) -> str:
    """Rows as aligned plain text."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: list[list[str]]) -> str:
    """Rows as a Markdown table."""
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(out)


def _verdict(target: str, ok: bool | None, detail: str) -> dict[str, str]:
    status = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
    return {"target": target, "status": status, "detail": detail}


def _pair(results: Results, scenario: str, a: str, b: str) -> tuple[Any, Any, str | None]:
    """Rows a and b of a scenario, or why they cannot be compared."""
    ra, rb = _find(results, scenario, a), _find(results, scenario, b)
    if ra is None or rb is None:
        return None, None, f"{scenario}: no {a if ra is None else b} row in this run"
    return ra, rb, None


def targets(results: Results) -> list[dict[str, str]]:
    """PASS/FAIL/SKIP for each performance target, from this run's figures only."""
    out = []
    mp, ml, why = _pair(results, "iris b1 c64", MODELPORT, MLSERVER)
    name_rps = "iris b1 c64: modelport req/s >= 5x MLServer"
    name_p99 = "iris b1 c64: modelport p99 <= 1/5 of MLServer's"
    if why:
        out += [_verdict(name_rps, None, why), _verdict(name_p99, None, why)]
    elif mp["failed"] or ml["failed"]:
        out += [
            _verdict(name_rps, False, "a run failed"),
            _verdict(name_p99, False, "a run failed"),
        ]
    else:
        ratio = mp["rps"] / ml["rps"]
        out.append(_verdict(name_rps, ratio >= 5, f"{ratio:.2f}x"))
        share = mp["p99_ms"] / ml["p99_ms"]
        out.append(_verdict(name_p99, share <= 0.2, f"{mp['p99_ms']:.1f} vs {ml['p99_ms']:.1f} ms"))

    on, off, why = _pair(results, "heavy b1 c64", MODELPORT, NO_BATCHING)
    name = "heavy b1 c64: batching on >= 4x batching off, p99 no worse"
    if why:
        out.append(_verdict(name, None, why))
    elif on["failed"] or off["failed"]:
        out.append(_verdict(name, False, "a run failed"))
    else:
        ratio = on["rps"] / off["rps"]
        detail = f"{ratio:.2f}x; p99 {on['p99_ms']:.1f} vs {off['p99_ms']:.1f} ms"
        out.append(_verdict(name, ratio >= 4 and on["p99_ms"] <= off["p99_ms"], detail))

    out += _grpc_targets(results)
    out.append(_observability_target(results))
    out += _overload_targets(results)
    out.append(_soak_target(results))

    name = "start-to-ready < 1.5 s (modelport, demo registry)"
    starts = [s for s in results["start_to_ready"] if s["server"] == MODELPORT]
    if not starts:
        out.append(_verdict(name, None, "not measured in this run"))
    elif starts[0]["failed"]:
        out.append(_verdict(name, False, starts[0]["failed"]))
    else:
        out.append(_verdict(name, starts[0]["median_s"] < 1.5, f"{starts[0]['median_s']:.2f} s"))

    name = "PSS with --workers 4 < 1.5x PSS with --workers 1 (~500 MB model)"
    mem = {m["server"]: m for m in results["memory"]}
    one, four = mem.get("modelport --workers 1"), mem.get("modelport --workers 4")
    if one is None or four is None:
        out.append(_verdict(name, None, "not measured in this run (see notes)"))
    elif one["failed"] or four["failed"]:
        out.append(_verdict(name, False, "a run failed"))
    else:
        ratio = four["pss_mb"] / one["pss_mb"]
        detail = f"{four['pss_mb']:,.0f} / {one['pss_mb']:,.0f} MB = {ratio:.2f}x"
        out.append(_verdict(name, ratio < 1.5, detail))
    name = (
        "PSS with --workers 4 after an alias move to a new version < 1.5x PSS with --workers 1, "
        "no failed request during the move"
    )
    moved = mem.get("modelport --workers 4, after an alias move")
    if one is None or moved is None:
        out.append(_verdict(name, None, "not measured in this run (see notes)"))
    elif one["failed"] or moved["failed"]:
        out.append(_verdict(name, False, moved["failed"] or one["failed"]))
    else:
        ratio = moved["pss_mb"] / one["pss_mb"]
        detail = (
            f"{moved['pss_mb']:,.0f} / {one['pss_mb']:,.0f} MB = {ratio:.2f}x; "
            f"{moved['requests_during_move']} requests during the move, none failed"
        )
        out.append(_verdict(name, ratio < 1.5, detail))
    return out


GRPC_SCENARIO = "iris b1 grpc s64"
GRPC_REST = f"iris b1 c64 {BESIDE_GRPC}"
"""The REST load on the same server starts as GRPC_SCENARIO."""
HEAVY_GRPC = "heavy b1 grpc s64"
HEAVY_REST = f"heavy b1 c64 {BESIDE_GRPC}"
OFF_WORDS = "metrics, access log, inference log off"


def _ratio_target(
    results: Results, name: str, a: tuple[str, str], b: tuple[str, str], factor: float
) -> dict[str, str]:
    """req/s of row a (scenario, server) >= factor x row b's; the detail gives both p99s."""
    ra, rb = _find(results, *a), _find(results, *b)
    if ra is None or rb is None:
        missing = a if ra is None else b
        return _verdict(name, None, f"no {missing[1]} row for {missing[0]} in this run")
    if ra["failed"] or rb["failed"] or not rb["rps"]:
        return _verdict(name, False, "a run failed")
    ratio = ra["rps"] / rb["rps"]
    shown = f"{ratio:.0%}" if factor < 1 else f"{ratio:.2f}x"
    detail = f"{ra['rps']:,.0f} vs {rb['rps']:,.0f} req/s = {shown}; "
    detail += f"p99 {ra['p99_ms']:.1f} vs {rb['p99_ms']:.1f} ms"
    if a[1] == b[1] and len(ra["rounds"]) == len(rb["rounds"]):
        # The same server's two loads, start by start: the ratio within each process.
        pairs = zip(ra["rounds"], rb["rounds"], strict=True)
        each = [x["rps"] / y["rps"] for x, y in pairs if "rps" in x and y.get("rps")]
        detail += "; per start: " + ", ".join(f"{r:.0%}" for r in each)
    return _verdict(name, ratio >= factor, detail)


def _grpc_targets(results: Results) -> list[dict[str, str]]:
    """gRPC, like with like: modelport with metrics, the access log and the inference log off
    (the ceiling logs nothing) against the bare servicer, MLServer and its own REST (the same
    server start); and batching's gain on the heavy model over gRPC."""
    off = f"modelport ({OFF_WORDS})"
    return [
        _ratio_target(
            results,
            f"{GRPC_SCENARIO}: {off} req/s >= 1.0x a bare grpc.aio servicer",
            (GRPC_SCENARIO, OBS_OFF),
            (GRPC_SCENARIO, GRPC_CEILING),
            1.0,
        ),
        _ratio_target(
            results,
            f"{GRPC_SCENARIO}: {off} req/s >= 4x MLServer",
            (GRPC_SCENARIO, OBS_OFF),
            (GRPC_SCENARIO, MLSERVER),
            4.0,
        ),
        _ratio_target(
            results,
            f"iris b1: {off}, gRPC s64 req/s >= 45% of REST c64",
            (GRPC_SCENARIO, OBS_OFF),
            (GRPC_REST, OBS_OFF),
            0.45,
        ),
        _ratio_target(
            results,
            f"iris b1: modelport compiled ({OFF_WORDS}), gRPC s64 req/s >= 45% of REST c64",
            (GRPC_SCENARIO, COMPILED_OFF),
            (GRPC_REST, COMPILED_OFF),
            0.45,
        ),
        _ratio_target(
            results,
            f"{HEAVY_GRPC}: batching on >= 4x batching off (req/s)",
            (HEAVY_GRPC, MODELPORT),
            (HEAVY_GRPC, NO_BATCHING),
            4.0,
        ),
    ]


def grpc_rows(results: Results) -> list[list[str]]:
    """Header plus gRPC beside REST, per model and server: req/s, p99, rows per call, and
    gRPC req/s as a share of REST's (the same server start, so the same process)."""
    rows = [
        [
            "model",
            "server",
            "gRPC s64 req/s",
            "p99 ms",
            "rows/call",
            "REST c64 req/s",
            "p99 ms",
            "rows/call",
            "gRPC / REST",
        ]
    ]
    for model, grpc_scenario, rest_scenario in (
        ("iris", GRPC_SCENARIO, GRPC_REST),
        ("heavy", HEAVY_GRPC, HEAVY_REST),
    ):
        servers = [r["server"] for r in results["loads"] if r["scenario"] == grpc_scenario]
        for server in servers:
            g, r = _find(results, grpc_scenario, server), _find(results, rest_scenario, server)
            cells = [model, server]
            for row in (g, r):
                if row is None:
                    cells += ["-", "-", "-"]
                elif row["failed"]:
                    cells += ["FAILED", "-", "-"]
                else:
                    cells += [
                        _num(row["rps"], ",.0f"),
                        _num(row["p99_ms"], ".1f"),
                        _num(row.get("rows_per_call"), ".1f"),
                    ]
            ok = g and r and not g["failed"] and not r["failed"] and r["rps"]
            cells.append(f"{g['rps'] / r['rps']:.0%}" if ok and g and r else "-")
            rows.append(cells)
    return rows


def grpc_cost_rows(results: Results) -> list[list[str]]:
    """Header plus what observability costs on iris over gRPC and over REST: req/s of
    metrics + inference log on, and of the defaults (also the JSON access log), as a share
    of req/s with all of it off, and the p99s."""
    rows = [[f"iris b1, modelport, against {OFF_WORDS}", "req/s on / off", "p99 on / off ms"]]
    for what, scenario in (("gRPC s64", GRPC_SCENARIO), ("REST c64", GRPC_REST)):
        off = _find(results, scenario, OBS_OFF)
        for server in (OBS_ON, MODELPORT):
            on = _find(results, scenario, server)
            label = f"{what}: {server}" + (" (defaults)" if server == MODELPORT else "")
            if on is None or off is None or on["failed"] or off["failed"] or not off["rps"]:
                rows.append([label, "-", "-"])
                continue
            rows.append(
                [
                    label,
                    f"{on['rps']:,.0f} / {off['rps']:,.0f} = {on['rps'] / off['rps']:.0%}",
                    f"{on['p99_ms']:.1f} / {off['p99_ms']:.1f}",
                ]
            )
    return rows


OBS_SCENARIO = "iris b1 c64 obs"


def _observability_target(results: Results) -> dict[str, str]:
    """req/s with metrics and the inference log on >= 85% of the same server without."""
    name = f"{OBS_SCENARIO}: metrics + inference log on >= 85% of off (req/s)"
    on, off, why = _pair(results, OBS_SCENARIO, OBS_ON, OBS_OFF)
    if why:
        return _verdict(name, None, why)
    if on["failed"] or off["failed"]:
        return _verdict(name, False, "a run failed")
    share = on["rps"] / off["rps"]
    detail = f"{on['rps']:,.0f} vs {off['rps']:,.0f} req/s = {share:.0%}; "
    detail += f"p99 {on['p99_ms']:.1f} vs {off['p99_ms']:.1f} ms"
    return _verdict(name, share >= 0.85, detail)


OVERLOAD_P99_FACTOR = 10
"""Admitted p99 at twice the sustainable rate may be at most this many times the p99 at half."""
RECOVERED_FACTOR = 2
"""Recovered: a 100 ms window's admitted p99 back within this many times the p99 at half load."""


def overload_summary(ov: dict[str, Any] | None) -> dict[str, Any] | None:
    """The overload run's headline figures, or None when it has no open-loop figures.

    Phases: before (half the sustainable rate), over (twice it), after (half again).
    `recovered_ms`: from the drop back to half load to the end of the first 100 ms window
    whose admitted p99 is within RECOVERED_FACTOR of the p99 before the overload.
    """
    if not ov or "open_loop" not in ov:
        return None
    load = ov["open_loop"]
    before, over, after = load["phases"]
    unloaded = before["p99_ms"]
    recovered = None
    for i, p99 in enumerate(after["p99_ms_by_100ms"]):
        if unloaded and p99 is not None and p99 <= RECOVERED_FACTOR * unloaded:
            recovered = (i + 1) * 100
            break
    return {
        "sustainable_rps": ov["closed"]["rps"],
        "closed_p99_ms": ov["closed"]["p99_us"] / 1000,
        "unloaded_p99_ms": unloaded,
        "offered_rps": over["offered"] / over["seconds"],
        "admitted_rps": over["admitted_rps"],
        "answered_rps": over["answered_rps"],
        "shed_share": over["shed"] / over["offered"] if over["offered"] else 0.0,
        "overload_p50_ms": over["p50_ms"],
        "overload_p99_ms": over["p99_ms"],
        "client_queue_max": over["backlog_max"],
        "lost": sum(p["errors"] for p in load["phases"]),
        "other": sum(p["other"] for p in load["phases"]),
        "silent_seconds": sum(1 for r in over["per_second"] if r["answered_rps"] == 0),
        "after_first_second_p99_ms": after["per_second"][0]["p99_ms"],
        "recovered_ms": recovered,
        "after_s": after["seconds"],
        "ready_after": ov.get("ready_after", 0),
        "shed_without_retry_after": load["shed_without_retry_after"],
        "client_cpu": load["client_cpu"],
        "client_lag_ms_max": max(p["lag_ms_max"] for p in load["phases"]),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def overload_rows(results: Results) -> list[list[str]]:
    """Header plus the overload run's headline figures (none when it did not run)."""
    ov = results.get("overload")
    rows = [["overload (" + " ".join(OVERLOAD_FLAGS) + ")", "figure"]]
    if not ov:
        return rows
    if ov["failed"]:
        return [*rows, ["run", f"FAILED: {ov['failed']}"]]
    o = overload_summary(ov)
    assert o is not None
    recovered = (
        f"{o['recovered_ms']} ms"
        if o["recovered_ms"] is not None
        else f"not within the {o['after_s']:g} s at half load"
    )
    return [
        *rows,
        [
            f"sustainable rate ({OVERLOAD_CLOSED.name}, wrk)",
            f"{o['sustainable_rps']:,.0f} req/s, p99 {_ms(o['closed_p99_ms'])}",
        ],
        ["p99 at 0.5x, before (the unloaded level)", _ms(o["unloaded_p99_ms"])],
        ["offered at 2x (open loop)", f"{o['offered_rps']:,.0f} req/s"],
        ["answered at 2x (200 + 503)", f"{o['answered_rps']:,.0f} req/s"],
        ["admitted at 2x (200)", f"{o['admitted_rps']:,.0f} req/s"],
        ["shed at 2x (503 + Retry-After)", f"{o['shed_share']:.0%} of offered"],
        [
            "admitted p50 / p99 at 2x",
            f"{_ms(o['overload_p50_ms'])} / {_ms(o['overload_p99_ms'])}",
        ],
        ["most requests queued at the client (all connections busy)", f"{o['client_queue_max']:,}"],
        ["lost (no answer) / other statuses", f"{o['lost']:,} / {o['other']:,}"],
        ["p99 in the first second back at 0.5x", _ms(o["after_first_second_p99_ms"])],
        ["time to recover (p99 within 2x of the unloaded level)", recovered],
        [
            "load generator",
            f"{o['client_cpu']:.0%} of its CPU, at most {o['client_lag_ms_max']:.1f} ms late",
        ],
    ]


def overload_seconds(ov: dict[str, Any]) -> list[list[str]]:
    """Header plus one row per second of the open-loop run (by the time requests were due)."""
    rows = [
        ["s", "load", "offered", "answered/s", "admitted", "shed", "p50 ms", "p99 ms", "queued"]
    ]
    load = ov.get("open_loop")
    if not load:
        return rows
    t = 0
    for factor, p in zip(ov["factors"], load["phases"], strict=True):
        for r in p["per_second"]:
            rows.append(
                [
                    str(t),
                    f"{factor:g}x",
                    f"{r['offered']:,}",
                    f"{r['answered_rps']:,.0f}",
                    f"{r['ok']:,}",
                    f"{r['shed']:,}",
                    _num(r["p50_ms"], ".1f"),
                    _num(r["p99_ms"], ".1f"),
                    f"{r['backlog_max']:,}",
                ]
            )
            t += 1
    return rows


def _overload_targets(results: Results) -> list[dict[str, str]]:
    """Bounded p99 with every request answered at 2x; back to the unloaded p99 within 1 s."""
    bounded = (
        f"overload: admitted p99 at 2x the sustainable rate <= {OVERLOAD_P99_FACTOR}x the p99 "
        "at 0.5x, every request answered (200 or 503)"
    )
    recovers = f"overload: p99 back within {RECOVERED_FACTOR}x of the 0.5x level within 1 s"
    ov = results.get("overload")
    if not ov:
        why = "not run"
        return [_verdict(bounded, None, why), _verdict(recovers, None, why)]
    o = overload_summary(ov)
    if ov["failed"] or o is None:
        return [_verdict(bounded, False, "the run failed"), _verdict(recovers, False, "failed")]
    unloaded, p99 = o["unloaded_p99_ms"], o["overload_p99_ms"]
    answered = not o["lost"] and not o["silent_seconds"] and o["ready_after"] == 200
    ok = answered and unloaded is not None and p99 is not None
    ok = ok and p99 <= OVERLOAD_P99_FACTOR * unloaded
    detail = f"{_ms(p99)} vs {_ms(unloaded)}"
    if unloaded and p99:
        detail += f" = {p99 / unloaded:.1f}x"
    detail += f"; admitted {o['admitted_rps']:,.0f} req/s, shed {o['shed_share']:.0%}"
    detail += f"; lost {o['lost']}, ready after: {o['ready_after']}"
    recovered = o["recovered_ms"]
    after = "not within the phase" if recovered is None else f"{recovered} ms"
    return [
        _verdict(bounded, ok, detail),
        _verdict(recovers, recovered is not None and recovered <= 1000, after),
    ]


def soak_summary(soak: dict[str, Any] | None) -> dict[str, Any] | None:
    """RSS at the end of warm-up and at the end, and the growth between; None without samples."""
    if not soak or not soak["samples"]:
        return None
    samples = soak["samples"]
    warm = next((x for x in samples if x["t_s"] >= soak["warmup_s"]), samples[-1])
    last = samples[-1]
    return {
        "first_mb": samples[0]["rss_mb"],
        "warm_mb": warm["rss_mb"],
        "warm_t_s": warm["t_s"],
        "last_mb": last["rss_mb"],
        "last_t_s": last["t_s"],
        "peak_mb": max(x["rss_mb"] for x in samples),
        "growth": (last["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"] if warm["rss_mb"] else 0.0,
    }


def soak_brief(soak: dict[str, Any]) -> str:
    """One line: RSS after warm-up, at the end, and the growth."""
    s = soak_summary(soak)
    if s is None:
        return f"no RSS samples: {soak['failed']}"
    text = f"RSS {s['warm_mb']:.1f} MB at {s['warm_t_s']:.0f} s -> {s['last_mb']:.1f} MB at "
    text += f"{s['last_t_s']:.0f} s: {s['growth']:+.1%}"
    return text + (f"; FAILED: {soak['failed']}" if soak["failed"] else "")


def soak_rows(results: Results) -> list[list[str]]:
    """Header plus the soak's figures (none when it did not run)."""
    soak = results.get("soak")
    rows = [[f"soak ({SOAK_LOAD.name.removesuffix(' soak')}, {SOAK})", "figure"]]
    if not soak:
        return rows
    if soak["failed"]:
        rows.append(["run", f"FAILED: {soak['failed']}"])
    run = soak.get("wrk", {})
    if "rps" in run:
        rows.append(
            [
                f"load ({soak['seconds']} s)",
                f"{run['rps']:,.0f} req/s, p99 {run['p99_us'] / 1000:.1f} ms, "
                f"{run['requests']:,} requests",
            ]
        )
    s = soak_summary(soak)
    if s is not None:
        rows += [
            ["RSS at start", f"{s['first_mb']:.1f} MB"],
            [f"RSS after warm-up ({s['warm_t_s']:.0f} s)", f"{s['warm_mb']:.1f} MB"],
            [f"RSS at the end ({s['last_t_s']:.0f} s)", f"{s['last_mb']:.1f} MB"],
            ["peak RSS", f"{s['peak_mb']:.1f} MB"],
            ["growth after warm-up", f"{s['growth']:+.2%}"],
        ]
    if "inference_log_rows" in soak:
        rows.append(["inference-log rows written", f"{soak['inference_log_rows']:,}"])
    if "log_mb" in soak:
        rows.append(["server log (JSON access records)", f"{soak['log_mb']:,.0f} MB"])
    return rows


def _soak_target(results: Results) -> dict[str, str]:
    name = f"soak: RSS growth after warm-up < 5% ({SOAK_SECONDS // 60} min, {SOAK_LOAD.name})"
    soak = results.get("soak")
    if not soak:
        return _verdict(name, None, "not run (`make bench ONLY=soak`, or SOAK=1)")
    s = soak_summary(soak)
    if soak["failed"] or s is None:
        return _verdict(name, False, soak["failed"] or "no RSS samples")
    detail = f"{s['warm_mb']:.1f} -> {s['last_mb']:.1f} MB = {s['growth']:+.2%}"
    if soak["seconds"] < SOAK_SECONDS:
        detail += f" (only {soak['seconds']} s: SOAK_SECONDS, a check, not the full soak)"
    return _verdict(name, s["growth"] < 0.05, detail)


def _soak_samples(results: Results) -> str:
    soak = results.get("soak")
    if not soak or not soak["samples"]:
        return ""
    shown = ", ".join(f"{x['t_s']:.0f} s: {x['rss_mb']:.1f}" for x in soak["samples"])
    return f"RSS samples (MB, every {SOAK_SAMPLE} s): {shown}."


def _overload_section(results: Results) -> str:
    ov = results.get("overload")
    if not ov:
        return "Not run."
    text = markdown_table(overload_rows(results))
    seconds = overload_seconds(ov)
    if len(seconds) > 1:
        text += "\n\nSecond by second (s = seconds since the open-loop load began; offered,"
        text += " admitted and shed count the requests due in that second; queued = the"
        text += " most requests waiting at the client for a free connection):\n\n"
        text += markdown_table(seconds)
    return text


def _soak_section(results: Results) -> str:
    if not results.get("soak"):
        return "Not run in this run (`make bench ONLY=soak`, or `make bench SOAK=1`)."
    return markdown_table(soak_rows(results)) + "\n\n" + _soak_samples(results)


BATCH_SIZE_METRIC = "modelport_batch_size"


def _grpc_section(results: Results) -> str:
    """The gRPC-beside-REST tables under their heading, or "" when the gRPC group did not run."""
    rows = grpc_rows(results)
    if len(rows) == 1:
        return ""
    text = "\n## gRPC beside REST\n\n" + markdown_table(rows)
    return text + "\n\n" + markdown_table(grpc_cost_rows(results)) + "\n"


def partial_markdown(results: Results, chart: str) -> str:
    """A short page for a --quick or --only run: figures, the gRPC tables, targets, notes."""
    m, v = results["machine"], results["versions"]
    measured = [t for t in results["targets"] if t["status"] != "SKIP"]
    target_rows = [["target", "result", "figures"]] + [
        [t["target"], f"**{t['status']}**", t["detail"]] for t in measured
    ]
    skipped = [t["target"] for t in results["targets"] if t["status"] == "SKIP"]
    if skipped:
        target_rows.append(["not measured in this run: " + "; ".join(skipped), "SKIP", ""])
    notes = "\n".join(f"- {n}" for n in results["notes"]) or "- none"
    return f"""# {results["command"]}

{results["date"]}, {results["rounds"]} round(s) of {results["duration_s"]} s per scenario and
server, {results["warmup_s"]} s warm-up after each start; the server on CPU {m["server_cpu"]},
the load generator on CPU {m["load_cpu"]}. {m["nproc"]} CPUs ({m["cpu"]}), Linux
{m["kernel"]}, Python {m["python"]}, {v["wrk"]}, {v.get("h2load") or "no h2load"}, modelport
{v["modelport"]} (imported from `{v.get("modelport_source", "?")}`), MLServer
{v["mlserver"] or "not run"}. The method is docs/performance.md's.
Raw figures: the JSON file beside this one.

## Results

ratio = req/s / MLServer's in the same scenario; rows/call = mean rows per model call
(from /metrics: none where metrics are off).

{markdown_table(table_rows(results))}
{_grpc_section(results)}
![req/s by scenario and server]({chart})

## Targets

{markdown_table(target_rows)}

## Notes

{notes}
"""


KEPT_MARKER = "<!-- Measured by scripts of their own; `make bench` keeps what follows. -->"
"""Where docs/performance.md stops being the runner's: what follows is carried over as it is."""


def kept_sections(page: Path) -> str:
    """The part of `page` from KEPT_MARKER on ("" when the page or the marker is missing)."""
    text = page.read_text() if page.exists() else ""
    at = text.find(KEPT_MARKER)
    return "" if at < 0 else text[at:]


def markdown(results: Results, chart: str, kept: str = "") -> str:
    """The whole of docs/performance.md for one full run, `kept` (see KEPT_MARKER) at its end."""
    m, v = results["machine"], results["versions"]
    target_rows = [["target", "result", "figures"]] + [
        [t["target"], f"**{t['status']}**", t["detail"]] for t in results["targets"]
    ]
    notes = "\n".join(f"- {n}" for n in results["notes"]) or "- none"
    models = "\n".join(
        f"  - `{name}`: {info['description']} ({size(info['mb'])} joblib file)"
        for name, info in results["models"].items()
    )
    return f"""# Performance

modelport measured side by side with MLServer {v["mlserver"]} in the same run, on the same
machine, serving the same model files. Regenerate this page (figures, chart and all) with:

```
make bench
```

(`make bench ROUNDS=5 DURATION=20` for longer runs; `make bench QUICK=1` for a quick try
that leaves this page alone.) Raw figures: `benchmarks/results/latest.json`.
This run: {results["date"]}, {results["rounds"]} round(s) of {results["duration_s"]} s per
scenario and server.

## Method

- The server under test runs pinned to CPU {m["server_cpu"]} (`taskset -c {m["server_cpu"]}`),
  the load generator to CPU {m["load_cpu"]}: `taskset -c {m["load_cpu"]} wrk -t1 -cC -dDs
  -s benchmarks/post.lua URL`, where `post.lua` POSTs one OIP JSON body and reports req/s,
  p50, p99 and the non-2xx count (wrk's timeout is 60 s, so even the slowest answers count in
  p99). Any non-2xx response, socket error or timeout marks the run FAILED.
- gRPC (`{GRPC_SCENARIO}`, `{HEAVY_GRPC}`): the same servers' gRPC ports, driven by
  h2load from CPU {m["load_cpu"]}: `taskset -c {m["load_cpu"]} h2load -D D -c 4 -m 16 -d
  BODY -H 'content-type: application/grpc' -H 'te: trailers'
  http://127.0.0.1:PORT/inference.GRPCInferenceService/ModelInfer` (64 concurrent streams
  over 4 connections), where BODY is the 5-byte gRPC frame header plus one serialized
  `ModelInferRequest` (one row in `raw_input_contents`, as tritonclient sends it, asking
  for `predict`). p50/p99 come from h2load's per-request log. h2load only sees HTTP
  statuses, so after each start one request with a gRPC client must get grpc-status 0, or
  the run is FAILED. `{GRPC_CEILING}` is `benchmarks/grpc_ceiling.py`: grpc.aio on uvloop
  answering every call with a fixed response, no model and no logging. Like with like, the
  gRPC group (`make bench ONLY=grpc`) serves modelport with `{" ".join(OBS_OFF_FLAGS)}`
  (`{OBS_OFF}`, `{COMPILED_OFF}`) and once with its defaults (`{MODELPORT}`); each modelport
  start takes the gRPC load and then the same rows over REST (`{GRPC_REST}`, wrk), so gRPC
  and REST are compared within one process. MLServer (its defaults) and the ceiling take
  the gRPC load only. The heavy model runs the same way with batching on and
  `--no-batching` (defaults otherwise). rows/call is the mean of `{BATCH_SIZE_METRIC}` over
  the run (scraped from /metrics before and after it), so rows with metrics off have none.
- Servers alternate round by round (MLServer, modelport, ... then again), each start followed
  by a {results["warmup_s"]} s warm-up; the table shows the median over rounds.
- Request bodies: input `input-0`, FP32 `[N, features]`, asking for output `predict` (so both
  servers compute the same thing). `bN` = N rows per request, `cN` = N connections.
- Both servers load the same joblib files, trained once with the project's scikit-learn
  ({v["scikit-learn"]}, also pinned in MLServer's venv):
{models}
- MLServer: `mlserver start .` in a folder with `model-settings.json`
  (`mlserver_sklearn.SKLearnModel`) and `settings.json` (`parallel_workers: 0`).
  modelport: the files pushed with `modelport models push FILE --name NAME --trust-pickle`,
  served with `modelport serve --model NAME`. Rows: `modelport` = default settings
  (batching on); `--no-batching` = batching off; `compiled` = the same file pushed with
  `--compile onnx` and served as compiled; `compiled --no-compiled` = that version served from
  its original scikit-learn file.
- Observability cost (`{OBS_SCENARIO}`; on its own: `make bench ONLY=obs`): the iris b1 c64
  REST load on the same registered model, served two ways:
  `{OBS_ON}` = `modelport serve {" ".join(OBS_ON_FLAGS)}`: Prometheus metrics and every
  inference in the inference log (a SQLite file in the registry directory);
  `{OBS_OFF}` = `modelport serve {" ".join(OBS_OFF_FLAGS)}`; and, for the record,
  `{OBS_ALL}` = `modelport serve {" ".join(OBS_ALL_FLAGS)}`, which adds one JSON access
  record per request on stderr (written to the server's log file).
  The three alternate round by round, the order reversing every round. After each stop
  the runner checks that the server recorded what its label says (`/metrics` 200 or 404,
  access records in its log or none, inference-log rows added or none), else the run is FAILED.
- Overload (`make bench ONLY=overload`): one start of `modelport serve --model iris
  {" ".join(OVERLOAD_FLAGS)}`. A closed-loop wrk run ({OVERLOAD_CLOSED.name}, the same
  command as above) gives the sustainable rate R. Then `benchmarks/open_loop.py` (pinned to
  CPU {m["load_cpu"]}) offers R/2, 2R and R/2 requests a second, {results["duration_s"]} s
  each, without a pause: an open-loop load, each request due at a fixed time whatever the
  server answers (wrk, closed-loop, cannot offer more than the server takes). It holds
  {OVERLOAD_CONNECTIONS} keep-alive HTTP/1.1 connections (more than the queue bound, so the
  server decides what waits); a request due while all are busy waits at the client, and
  every latency counts from when the request was due. Per second of due time it records the
  requests offered, admitted (200), shed (503, each checked for Retry-After) and lost, and
  the admitted p50/p99; "answered/s" counts answers by the second they arrived. The unloaded
  level is the admitted p99 of the first R/2 phase; time to recover runs from the drop back
  to R/2 to the end of the first 100 ms window whose admitted p99 is within
  {RECOVERED_FACTOR}x of it.
- Soak (`make bench ONLY=soak`, or `SOAK=1` in a full run; about {SOAK_SECONDS // 60}
  minutes): `modelport serve --model iris` with default settings (metrics, the inference
  log and the JSON access log all on) under {SOAK_LOAD.name.removesuffix(" soak")} (wrk)
  for {SOAK_SECONDS // 60} minutes, the RSS (sum of `VmRSS` over the server's processes)
  sampled every {SOAK_SAMPLE} s. Growth = (last sample - sample at the end of the first
  minute, the warm-up) / the latter.
- start-to-ready: wall time from process start to the first 200 on `/v2/health/ready`,
  median of {results["start_repeats"]}; modelport serves the whole demo registry
  (`modelport demo`), MLServer its iris folder.
- memory: total PSS (sum of `Pss:` in `/proc/PID/smaps_rollup` over the server's process tree)
  after a few inferences, serving a ~500 MB MLP.

## Machine

{m["nproc"]} CPUs ({m["cpu"]}), {m["memory_gb"]:.0f} GB RAM, Linux {m["kernel"]},
Python {m["python"]}, {v["wrk"]}, {v.get("h2load") or "no h2load"}, modelport {v["modelport"]}.

## Results

ratio = modelport req/s / MLServer req/s in the same scenario.

{markdown_table(table_rows(results))}

{markdown_table(other_rows(results))}

![req/s by scenario and server]({chart})
{_grpc_section(results)}
## Overload

{_overload_section(results)}

## Soak

{_soak_section(results)}

## Targets

{markdown_table(target_rows)}

## Notes

{notes}
""" + (f"\n{kept}" if kept else "")
