"""The stream benchmark's verdicts and its plain-text table."""

from __future__ import annotations

from typing import Any

from report import text_table

Row = dict[str, Any]

RAW_RATIO = 0.70
"""modelport stream (default settings) against the raw loop on the same broker, at least."""
MLSERVER_RATIO = 10.0
"""modelport stream --format oip against MLServer's Kafka server, at least."""
VARIANTS = ("raw", "modelport", "modelport-nolog")
"""The runs of the redis and kafka groups: the raw loop, `modelport stream --format json`,
the same with `--inference-log off`."""


def _ok(row: Row | None) -> bool:
    return bool(row) and not row.get("error") and bool(row.get("messages_per_s"))


def _verdict(target: str, ratio: float | None, ok: bool | None, detail: str) -> Row:
    status = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
    return {"target": target, "value": ratio, "status": status, "detail": detail}


def _ratio(target: str, a: Row | None, b: Row | None, goal: float) -> Row:
    """a's messages/s over b's against `goal`: FAIL also when a lost answers; SKIP when a side
    was not measured."""
    if a is None or b is None or not (_ok(a) and _ok(b)):
        return _verdict(target, None, None, "not measured (see notes)")
    ratio = a["messages_per_s"] / b["messages_per_s"]
    detail = f"{a['messages_per_s']:,.0f} against {b['messages_per_s']:,.0f} msg/s ({b['label']})"
    ok = ratio >= goal and a["missing"] == 0
    if a["missing"]:
        detail += f"; {a['missing']:,} answers missing"
    if b["missing"]:
        detail += f"; {b['label']} lost {b['missing']:,} answers"
    return _verdict(target, ratio, ok, detail)


def targets(results: dict[str, Any]) -> list[Row]:
    """Each target with its figure: PASS, FAIL or SKIP."""
    out = []
    for broker in ("redis", "kafka"):
        runs = results.get(broker) or {}
        verdict = _ratio(
            f"{broker}: modelport stream >= {RAW_RATIO:.2f}x the raw loop",
            runs.get("modelport"),
            runs.get("raw"),
            RAW_RATIO,
        )
        off, raw = runs.get("modelport-nolog"), runs.get("raw")
        if verdict["status"] != "SKIP" and _ok(off) and off and raw:
            ratio = off["messages_per_s"] / raw["messages_per_s"]
            verdict["detail"] += f"; --inference-log off {ratio:.2f}x"
        out.append(verdict)
    mlserver = results.get("mlserver") or {}
    verdict = _ratio(
        f"kafka: modelport stream --format oip >= {MLSERVER_RATIO:.0f}x MLServer's Kafka server",
        mlserver.get("modelport"),
        mlserver.get("mlserver"),
        MLSERVER_RATIO,
    )
    at_once = mlserver.get("mlserver-at-once")
    if verdict["status"] != "SKIP" and at_once:
        verdict["detail"] += (
            f"; fed all at once it answered {at_once.get('answers', 0):,} of "
            f"{at_once['messages']:,}"
        )
    out.append(verdict)
    return out


def _note(row: Row) -> str:
    notes = []
    if row.get("error"):
        notes.append(f"FAILED: {row['error'].split('; see ')[0]}")
    if row.get("runs_per_s"):
        notes.append("runs " + ", ".join(f"{r:,}" for r in row["runs_per_s"]))
    if row.get("labels_equal") is not None:
        notes.append(f"{row['labels_equal']:,} labels as scikit-learn's")
    if row.get("errors_logged"):
        notes.append(f"{row['errors_logged']:,} errors logged")
    if row.get("cpu_share") is not None:
        notes.append(f"{row['cpu_share']:.0%} of a core")
    return "; ".join(notes)


def table(results: dict[str, Any]) -> str:
    """Every measurement, then every target, as aligned text."""
    rows = [
        [
            "broker",
            "measurement",
            "messages",
            "answers",
            "missing",
            "dup",
            "seconds",
            "msg/s",
            "CPU us/msg",
            "note",
        ]
    ]
    for broker in ("redis", "kafka", "mlserver"):
        for r in (results.get(broker) or {}).values():
            if not isinstance(r, dict) or "label" not in r:
                continue
            cpu = r.get("cpu_us_per_msg")
            rows.append(
                [
                    "kafka" if broker == "mlserver" else broker,
                    r["label"],
                    f"{r['messages']:,}",
                    f"{r.get('answers', 0):,}",
                    f"{r.get('missing', 0):,}",
                    f"{r.get('duplicated', 0):,}",
                    f"{r.get('span_s', 0):.2f}",
                    f"{r['messages_per_s']:,.0f}" if r.get("messages_per_s") else "-",
                    "-" if cpu is None else f"{cpu:.0f}",
                    _note(r),
                ]
            )
    verdicts = [["target", "status", "ratio", "detail"]]
    for t in results["targets"]:
        ratio = "" if t["value"] is None else f"{t['value']:.2f}"
        verdicts.append([t["target"], t["status"], ratio, t["detail"]])
    return text_table(rows) + "\n\n" + text_table(verdicts)
