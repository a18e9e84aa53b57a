"""The batch benchmark's verdicts (issue 14's speed targets) and its plain-text table."""

from __future__ import annotations

from typing import Any

from report import text_table

Row = dict[str, Any]

RAW_RATIO = 0.8
"""modelport batch on 2M rows: at least this share of the raw loop's rows/s."""
MLSERVER_RATIO = 20.0
"""modelport batch on 100k rows: at least this many times `mlserver infer`'s rows/s."""
DASK_RATIO = 1.6
"""--dask local:2 against local:1 on the heavy forest, on this 2-core machine."""
RSS_RATIO = 1.5
"""Peak RSS on 5M rows against 500k rows, at most."""


def _ok(row: Row | None) -> bool:
    return row is not None and not row.get("error")


def _size(rows: list[Row], size: str) -> Row | None:
    return next((r for r in rows if r["size"] == size), None)


def best_mlserver(results: dict[str, Any]) -> Row | None:
    """The `mlserver infer` run with the most rows/s, among those that lost no row if any did."""
    runs = [r for r in (results.get("mlserver") or {}).get("runs", []) if _ok(r)]
    whole = [r for r in runs if r.get("check", {}).get("missing") == 0]
    return max(whole or runs, key=lambda r: r["rows_per_s"], default=None)


def _verdict(target: str, ratio: float | None, ok: bool | None, detail: str) -> Row:
    status = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
    return {"target": target, "value": ratio, "status": status, "detail": detail}


def _ratio(target: str, a: Row | None, b: Row | None, goal: float, key: str = "rows_per_s") -> Row:
    """a[key] / b[key] against goal (at least; at most for RSS); SKIP when a side is missing."""
    if a is None or b is None or not (_ok(a) and _ok(b)):
        return _verdict(target, None, None, "not measured (see notes)")
    ratio = a[key] / b[key]
    unit = "MB" if key == "peak_rss_mb" else "rows/s"
    detail = f"{a[key]:,.0f} against {b[key]:,.0f} {unit} ({b['label']})"
    ok = ratio <= goal if key == "peak_rss_mb" else ratio >= goal
    return _verdict(target, ratio, ok, detail)


def targets(results: dict[str, Any]) -> list[Row]:
    """Each speed target of issue 14 with its figure: PASS, FAIL, or SKIP."""
    modelport = results.get("modelport") or []
    memory = results.get("memory") or []
    raw, mp2m = results.get("raw"), _size(modelport, "2M")
    versus_raw = _ratio(
        f"2M rows: modelport batch >= {RAW_RATIO}x the raw loop", mp2m, raw, RAW_RATIO
    )
    if versus_raw["status"] != "SKIP" and mp2m and raw and mp2m.get("summary_rows_per_s"):
        # Both sides' own figures, without start-up: the job's summary and the loop alone.
        inner = mp2m["summary_rows_per_s"] / raw["loop_rows_per_s"]
        versus_raw["detail"] += f"; start-up excluded {inner:.2f}x"
    out = [
        versus_raw,
        _ratio(
            f"100k rows: modelport batch >= {MLSERVER_RATIO:.0f}x mlserver infer",
            _size(modelport, "100k"),
            best_mlserver(results),
            MLSERVER_RATIO,
        ),
    ]
    dask = results.get("dask") or {}
    runs = dask.get("runs") or [None, None]
    verdict = _ratio(
        f"dask local:2 >= {DASK_RATIO}x local:1, same output", runs[1], runs[0], DASK_RATIO
    )
    same = dask.get("same_output")
    if verdict["status"] != "SKIP" and same is not None:
        verdict["detail"] += f"; output identical: {same['identical']} {same['why']}".rstrip()
        if not same["identical"]:
            verdict["status"] = "FAIL"
    out.append(verdict)
    out.append(
        _ratio(
            f"peak RSS on 5M rows <= {RSS_RATIO}x on 500k",
            _size(memory, "5M"),
            _size(memory, "500k"),
            RSS_RATIO,
            key="peak_rss_mb",
        )
    )
    return out


def _note(row: Row) -> str:
    if row.get("error"):
        return f"FAILED: {row['error'][:90]}"
    if "check" in row:
        c = row["check"]
        return (
            f"{c['answered']:,} answered, {c['missing']:,} missing, {c['errors']:,} errors, "
            f"{c['out_of_order']:,} out of order"
        )
    if "loop_rows_per_s" in row:
        return f"loop alone {row['loop_rows_per_s']:,.0f} rows/s, batches of {row['batch_rows']:,}"
    note = f"{row.get('rows_out', 0):,} rows out"
    if row.get("summary_rows_per_s"):
        note += f", _summary.json {row['summary_rows_per_s']:,.0f} rows/s"
    return note


def table(results: dict[str, Any]) -> str:
    """Every measurement, then every target, as aligned text."""
    rows = [["measurement", "rows", "seconds", "rows/s", "peak RSS MB", "note"]]
    runs = [results.get("raw"), *(results.get("modelport") or []), *(results.get("memory") or [])]
    runs += (results.get("dask") or {}).get("runs", [])
    runs += (results.get("mlserver") or {}).get("runs", [])
    for r in (r for r in runs if r):
        rows.append(
            [
                r["label"],
                f"{r['rows']:,}",
                f"{r['seconds']:.2f}",
                f"{r['rows_per_s']:,.0f}",
                "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}",
                _note(r),
            ]
        )
    verdicts = [["target", "status", "ratio", "detail"]]
    for t in results["targets"]:
        ratio = "" if t["value"] is None else f"{t['value']:.2f}"
        verdicts.append([t["target"], t["status"], ratio, t["detail"]])
    return text_table(rows) + "\n\n" + text_table(verdicts)
