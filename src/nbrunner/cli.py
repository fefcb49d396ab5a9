"""The `nbrunner` command: one verb per operation, `--json` on every listing.

Errors are one line on stderr: exit status 2 for bad input, 1 for an operation that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__, checks
from .backends import BACKENDS
from .errors import BadInput, NbrunnerError, OperationFailed
from .logs import CollapsedLines, LogFollower, strip_ansi, tail_offset
from .models import RunRecord, differing_params, params_text, queue_positions
from .modules import ModuleSpec, ParamSpec, lookup
from .provenance import provenance_lines
from .pruning import DEFAULT_GRACE, DEFAULT_MIN_PEERS, PruneRule
from .runner import Runner
from .states import RunStatus
from .store import HistoryFilter

Handler = Callable[[argparse.Namespace, Runner], int]
_HANDLERS: dict[str, Handler] = {}


def verb(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _HANDLERS[name] = handler
        return handler

    return register


# -- output ----------------------------------------------------------------------------------
def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _short_time(iso_time: str | None) -> str:
    return iso_time[5:19].replace("T", " ") if iso_time else "-"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _print_table(
    records: Sequence[RunRecord],
    *,
    queue: bool = False,
    only_differing: bool = False,
    extra: dict[str, list[float]] | None = None,
) -> None:
    """One row per run; PARAMS takes what the terminal's width ($COLUMNS) leaves, cut with …

    queue: add each run's priority and place in the queue (for `ps`); extra: more columns
    of numbers, one value per record (a metric's last and best, for `history --metric`).
    """
    extra = extra or {}
    if not records:
        print("no runs")
        return
    shown = differing_params(records) if only_differing and len(records) > 1 else None
    places = queue_positions(records)
    with_group = any(r.group for r in records)
    head = ["ID", "MODULE", "STATUS", "EXIT", "DURATION", "SUBMITTED"]
    head += ["PRI", "QUEUE"] if queue else []
    head += ["GROUP"] if with_group else []
    head += [name.upper() for name in extra]
    rows = [head]
    for index, r in enumerate(records):
        duration = f"{r.duration_s:.1f}s" if r.duration_s is not None else "-"
        row = [
            str(r.id),
            r.module,
            r.status.value,
            "-" if r.exit_code is None else str(r.exit_code),
        ]
        row += [duration, _short_time(r.to_dict()["submitted_at"])]
        row += [str(r.priority), str(places.get(r.id, "-"))] if queue else []
        row += [r.group or "-"] if with_group else []
        row += [f"{values[index]:.6g}" for values in extra.values()]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    room = shutil.get_terminal_size().columns - sum(widths) - 2 * len(widths)
    params = [
        params_text({k: v for k, v in r.params.items() if shown is None or k in shown})
        for r in records
    ]
    for row, text in zip(rows, ["PARAMS", *params], strict=True):
        cells = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(f"{cells}  {_cut(text, max(room, 12))}".rstrip())


def _print_records(
    records: Sequence[RunRecord],
    args: argparse.Namespace,
    extra: dict[str, list[float]] | None = None,
    **table: Any,
) -> None:
    if args.json:
        columns = (extra or {}).items()
        _print_json([r.to_dict() | {k: v[i] for k, v in columns} for i, r in enumerate(records)])
    else:
        _print_table(records, only_differing=args.diff, extra=extra, **table)


# -- verbs -----------------------------------------------------------------------------------
@verb("modules")
def _modules(args: argparse.Namespace, runner: Runner) -> int:
    modules = runner.modules()
    if args.json:
        _print_json([m.to_dict() for m in modules.values()])
        return 0
    for name, spec in sorted(modules.items()):
        params = ", ".join(
            f"{p.name}:{p.type}" + (f"={p.default}" if p.default is not None else "")
            for p in spec.params
        )
        print(f"{name:<16} {spec.description}")
        if params:
            print(f"{'':<16} params: {params}")
    if not modules:
        print(f"no modules; add some to {runner.modules_file}")
    return 0


def _parse_params(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadInput(f"parameters are given as -p KEY=VALUE, got {pair!r}")
        if key in params:  # the last one silently winning hides a typo in a long line
            raise BadInput(f"parameter {key!r} is given twice (-p {key}=...); give it once")
        params[key] = value
    return params


def _param_line(spec: ParamSpec) -> tuple[str, str, str]:
    """How `run MODULE --help` shows one parameter: name, what it takes, its help."""
    default = "required" if spec.required else f"default {spec.default}"
    if spec.optional:  # None is a value too
        default = "optional" if spec.default is None else f"{default}, or none"
    passed_as = f" (passed as {spec.option})" if spec.option != f"--{spec.name}" else ""
    return f"-p {spec.name}=", f"{spec.describe()}, {default}", spec.help + passed_as


def module_help(spec: ModuleSpec) -> str:
    """The parameters of one module, as `nbrunner run MODULE --help` lists them."""
    lines = [f"module {spec.name}" + (f": {spec.description}" if spec.description else "")]
    rows = [_param_line(p) for p in spec.params]
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(2)]
    lines.append("parameters:" if rows else "no parameters")
    lines += [f"  {n.ljust(widths[0])}  {k.ljust(widths[1])}  {h}".rstrip() for n, k, h in rows]
    return "\n".join(lines)


@verb("run")
def _run(args: argparse.Namespace, runner: Runner) -> int:
    if args.help:
        args.run_parser.print_help()
        print()
        print(module_help(lookup(runner.modules(), args.module)))
        return 0
    run = runner.submit(
        args.module,
        _typed_params(runner, args.module, args.param),
        priority=args.priority,
        timeout=args.timeout,
        group=args.group,
        after=args.after,
        backend=args.backend,
    )
    print(run.id, flush=True)
    return _waited(runner, run.id) if args.wait else 0


def _waited(runner: Runner, run_id: int) -> int:
    """`--wait`: the outcome on stderr (stdout holds the id); 0 if the run succeeded."""
    record = runner.wait(run_id)
    print(
        f"run {record.id} {record.status.value}" + (f": {record.reason}" if record.reason else ""),
        file=sys.stderr,
    )
    return 0 if record.status is RunStatus.SUCCEEDED else 1


def _active(runner: Runner, group: str | None, sweep: str | None = None) -> list[RunRecord]:
    runner.check_sweeps([sweep] if sweep else [])
    active = HistoryFilter.build(group=group).keep_groups(runner.store.active())
    return [r for r in active if sweep is None or r.sweep == sweep]


@verb("ps")
def _ps(args: argparse.Namespace, runner: Runner) -> int:
    records = _active(runner, args.group, args.sweep)
    _print_records(records, args, queue=True)
    for record in records if not args.json else ():  # why a queued run waits, if it says
        if record.status is RunStatus.QUEUED and record.reason:
            print(f"run {record.id} {record.reason}")
    return 0


@verb("history")
def _history(args: argparse.Namespace, runner: Runner) -> int:
    query = HistoryFilter.build(
        args.status, args.module, args.since, args.until, args.text, args.group, args.sweep
    )
    records, extra = runner.history_page(
        query, args.limit, args.offset, args.metric, sort=args.sort, strict=True
    )
    _print_records(records, args, extra)
    return 0


def _metric_goal(text: str) -> tuple[str, str | None]:
    """`val_acc:max` → ("val_acc", "max"); a bare name's goal is guessed from it."""
    name, _, goal = text.partition(":")
    if goal not in ("", "max", "min") or not name:
        raise BadInput(f"--metric takes NAME, NAME:max or NAME:min, got {text!r}")
    return name, goal or None


@verb("best")
def _best(args: argparse.Namespace, runner: Runner) -> int:
    """The run whose last value of the metric is best, with its params."""
    metric, goal = _metric_goal(args.metric)
    found = runner.best(
        metric, goal, status=args.status, module=args.module, group=args.group, sweep=args.sweep
    )
    if found is None:
        raise OperationFailed(f"no run reported {metric!r} yet")
    record, value = found
    if args.json:
        _print_json(record.to_dict() | {f"{metric}_last": value})
        return 0
    print(f"run {record.id} {record.status.value}  {metric}={value:.6g}")
    print(f"  {params_text(record.params) or 'no params'}")
    return 0


def _parse_sweep(runner: Runner, module: str, pairs: Sequence[str]) -> dict[str, list[Any]]:
    """-p lr=1e-3,1e-4 -p depth=3,none → {"lr": ["1e-3", "1e-4"], "depth": ["3", None]}."""
    spec = lookup(runner.modules(), module)
    return {
        key: [spec.from_text(key, part) for part in value.split(",")]
        for key, value in _parse_params(pairs).items()
    }


def _typed_params(runner: Runner, module: str, pairs: Sequence[str]) -> dict[str, Any]:
    """-p pairs as the module takes them: `none` is None for an optional parameter."""
    spec = lookup(runner.modules(), module)
    return {key: spec.from_text(key, value) for key, value in _parse_params(pairs).items()}


@verb("sweep")
def _sweep(args: argparse.Namespace, runner: Runner) -> int:
    """Queue one run per point; prints the sweep id, then the run ids."""
    values = _parse_sweep(runner, args.module, args.param)
    options: dict[str, Any] = {
        "priority": args.priority,
        "timeout": args.timeout,
        "group": args.group,
        "backend": args.backend,
        "name": args.name,
    }
    if not args.prune and (args.prune_grace, args.prune_min_peers) != (None, None):
        raise BadInput("--prune-grace and --prune-min-peers need --prune METRIC:max|min")
    if args.prune:  # checked here, so a bad rule queues nothing
        options["prune"] = PruneRule.parse(args.prune, args.prune_grace, args.prune_min_peers)
    if args.random is None:
        sweep = runner.sweep(args.module, values, **options)
    else:
        sweep = runner.sweep(
            args.module, space=values, count=args.random, seed=args.seed, **options
        )
    if args.json:
        _print_json({"sweep": sweep.id, "runs": sweep.ids})
    else:
        print(sweep.id)
        print(" ".join(str(i) for i in sweep.ids), flush=True)
    return 0


@verb("scalars")
def _scalars(args: argparse.Namespace, runner: Runner) -> int:
    """What runs reported: per run and metric a summary; --points or --json: every point."""
    import pandas as pd

    from .scalars import summary_rows

    names = args.name or None
    ids = list(args.ids) + _selected_ids(args, runner)
    if not ids:
        raise BadInput("name the runs (nbrunner scalars ID [ID ...]) or use --group / --sweep")
    if args.json or args.points:
        frame = runner.scalars(ids, names)
        frame["time"] = [None if pd.isna(t) else t.isoformat() for t in frame["time"]]
        if args.json:
            _print_json(frame.to_dict(orient="records"))
        else:
            frame.to_csv(sys.stdout, sep="\t", index=False)
        return 0
    records = [runner.get(run_id).record for run_id in dict.fromkeys(ids)]
    rows = [r for r in summary_rows(records) if names is None or r["name"] in names]
    if not rows:
        print("no scalars reported")
        return 0
    print(f"{'RUN':<6} {'NAME':<20} {'POINTS':>8} {'LAST':>12} {'MIN':>12} {'MAX':>12}")
    for r in rows:
        print(
            f"{r['run']:<6} {r['name']:<20} {r['points']:>8} "
            f"{r['last']:>12.6g} {r['min']:>12.6g} {r['max']:>12.6g}"
        )
    return 0


@verb("show")
def _show(args: argparse.Namespace, runner: Runner) -> int:
    if args.id is None:
        return _show_home(args, runner)
    record = runner.get(args.id).record
    if args.json:
        _print_json(record.to_dict())
    else:
        for key, value in record.to_dict().items():
            if value not in (None, [], {}) and key != "provenance":
                print(f"{key:<15} {value}")
        for line in provenance_lines(record.provenance):
            print(f"{'provenance':<15} {line}")
    return 0


def _show_home(args: argparse.Namespace, runner: Runner) -> int:
    """`nbrunner show` without a run: the home, what it holds and the disk it takes."""
    from .units import format_size

    usage = runner.disk_usage()
    home = {"home": str(runner.home), "runs": runner.count(), "disk_usage": usage}
    if args.json:
        _print_json(home)
    else:
        print(f"home            {home['home']}")
        print(f"runs            {home['runs']}")
        print(f"disk usage      {format_size(usage)} (`nbrunner prune --older-than 30d` frees)")
    return 0


@verb("prune")
def _prune(args: argparse.Namespace, runner: Runner) -> int:
    """Remove ended runs older than an age, with their logs; never an active run."""
    from .units import format_size

    report = runner.prune(args.older_than, keep_failed=args.keep_failed, dry_run=args.dry_run)
    if args.json:
        _print_json(report.to_dict())
        return 0
    verb_text = "would remove" if report.dry_run else "removed"
    print(
        f"{verb_text} {len(report.runs)} run(s) and {report.files} file(s), "
        f"{format_size(report.bytes_freed)}" + (" (store vacuumed)" if report.vacuumed else "")
    )
    return 0


@verb("logs")
def _logs(args: argparse.Namespace, runner: Runner) -> int:
    """The log as a terminal would show it (each progress-bar line's last redraw); --raw:
    the bytes the run wrote."""
    record = runner.get(args.id).record
    start = 0 if args.tail is None else tail_offset(record.log_path, args.tail)
    follower = LogFollower(record.log_path, offset=start)
    out = sys.stdout.buffer
    lines = CollapsedLines()
    shown = (lambda text: text) if _colour(args.color) else strip_ansi
    while True:
        # Asked before draining: whatever the run wrote before it ended is then read below.
        ended = args.follow and runner.store.get(record.id).is_done
        if args.raw:
            while chunk := follower.read_bytes():
                out.write(chunk)
        else:
            while text := follower.read():
                out.write(shown(lines.feed(text)).encode())
        if not args.follow or ended:
            out.write(b"" if args.raw else shown(lines.flush()).encode())
            out.flush()
            return 0
        out.flush()
        time.sleep(0.2)


def _colour(when: str) -> bool:
    """--color: auto means only on a terminal, and not when NO_COLOR is set (no-color.org)."""
    if when == "auto":
        return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    return when == "always"


@verb("cancel")
def _cancel(args: argparse.Namespace, runner: Runner) -> int:
    """Cancel each id given; says which were cancelled and why the others were not."""
    ids = list(args.ids)
    if args.all or args.group or args.sweep:
        ids += [r.id for r in _active(runner, args.group, args.sweep)]
    if not ids:
        if args.group:
            raise BadInput(f"group {args.group!r} has no active runs; nothing to cancel")
        if args.sweep:
            raise BadInput(f"sweep {args.sweep!r} has no active runs; nothing to cancel")
        if not args.all:
            raise BadInput(
                "name the runs to cancel (nbrunner cancel ID [ID ...]), "
                "or use --group NAME or --all"
            )
        if not args.json:  # --all asks for a state, which is already so
            print("no active runs; nothing to cancel", file=sys.stderr)
    done, refused = [], []
    for run_id in ids:
        try:
            record = runner.cancel(run_id)
        except BadInput as exc:
            refused.append({"id": run_id, "error": str(exc)})
            print(f"nbrunner: error: {exc}", file=sys.stderr)
            continue
        done.append(record.to_dict())
        if not args.json:
            what = "cancelled" if record.is_done else "cancelling (its processes are stopping)"
            print(f"run {record.id} {what}")
    if args.json:
        _print_json({"cancelled": done, "refused": refused})
    return 2 if refused else 0


@verb("restart")
def _restart(args: argparse.Namespace, runner: Runner) -> int:
    module = runner.get(args.id).module
    params = _typed_params(runner, module, args.param) if args.param else None
    run = runner.restart(args.id, params, priority=args.priority)
    print(run.id, flush=True)
    changed = runner.code_changed_since(args.id)
    if changed:
        print(f"nbrunner: note: the code changed since run {args.id}: {changed}", file=sys.stderr)
    return _waited(runner, run.id) if args.wait else 0


@verb("priority")
def _priority(args: argparse.Namespace, runner: Runner) -> int:
    record = runner.set_priority(args.id, args.priority)
    place = queue_positions(runner.store.active())[record.id]
    return _report_request(
        record, f"has priority {record.priority} (place {place} in the queue)", args.json
    )


def _report_request(record: RunRecord, what: str, as_json: bool) -> int:
    if as_json:
        _print_json(record.to_dict())
    else:
        print(f"run {record.id} {what}")
    return 0


@verb("pause")
def _pause(args: argparse.Namespace, runner: Runner) -> int:
    return _report_request(runner.pause(args.id), "pausing (its tree is suspended)", args.json)


@verb("resume")
def _resume(args: argparse.Namespace, runner: Runner) -> int:
    return _report_request(runner.resume(args.id), "resuming", args.json)


@verb("front")
def _front(args: argparse.Namespace, runner: Runner) -> int:
    record = runner.move_to_front(args.id)
    return _report_request(record, f"is next in the queue (priority {record.priority})", args.json)


def prometheus_text(metrics: dict[str, Any]) -> str:
    """The counters in Prometheus' text exposition format."""
    lines = ["# TYPE nbrunner_runs gauge"]
    lines += [
        f'nbrunner_runs{{status="{status}"}} {count}'
        for status, count in metrics["runs_by_status"].items()
    ]
    lines += [
        "# TYPE nbrunner_queued gauge",
        f"nbrunner_queued {metrics['queued']}",
        "# TYPE nbrunner_running gauge",
        f"nbrunner_running {metrics['running']}",
    ]
    for name, key in (("wait", "mean_wait_s"), ("run", "mean_run_s")):
        lines.append(f"# TYPE nbrunner_{name}_seconds_mean gauge")
        lines += [
            f'nbrunner_{name}_seconds_mean{{module="{module}"}} {stats[key]:.6g}'
            for module, stats in metrics["modules"].items()
            if stats[key] is not None
        ]
    return "\n".join(lines) + "\n"


@verb("metrics")
def _metrics(args: argparse.Namespace, runner: Runner) -> int:
    metrics = runner.metrics()
    if args.json:
        _print_json(metrics)
    elif args.prometheus:
        sys.stdout.write(prometheus_text(metrics))
    else:
        print(
            f"queued {metrics['queued']}, running {metrics['running']}, "
            f"{metrics['total']} runs in all"
        )
        for status, count in metrics["runs_by_status"].items():
            if count:
                print(f"  {status:<10} {count}")
        for module, stats in metrics["modules"].items():
            wait, run_time = stats["mean_wait_s"], stats["mean_run_s"]
            print(
                f"  {module:<16} {stats['runs']} runs"
                + (f", mean wait {wait:.2f} s" if wait is not None else "")
                + (f", mean run {run_time:.2f} s" if run_time is not None else "")
            )
    return 0


def _ids_to_wait_for(args: argparse.Namespace, runner: Runner) -> list[int]:
    """The runs named, then every run of the group or sweep, each once; all known before any
    wait."""
    ids = [runner.get(run_id).id for run_id in args.ids] + _selected_ids(args, runner)
    if not ids:
        raise BadInput(
            "name the runs to wait for (nbrunner wait ID [ID ...]) or use --group / --sweep"
        )
    return list(dict.fromkeys(ids))


def _selected_ids(args: argparse.Namespace, runner: Runner) -> list[int]:
    """Every run of --group, of --sweep, or of both when both are given; oldest first."""
    if not (args.group or args.sweep):
        return []
    runner.check_sweeps([args.sweep] if args.sweep else [])
    query = HistoryFilter.build(group=args.group, sweep=args.sweep)
    selected = runner.store.history(query, limit=checks.SQLITE_INT_MAX)
    if not selected:
        raise BadInput(f"group {args.group!r} has no runs; `nbrunner history` lists them")
    return sorted(r.id for r in selected)


@verb("wait")
def _wait(args: argparse.Namespace, runner: Runner) -> int:
    """Wait for each run in turn, one line as each ends; exit status 1 if any did not succeed."""
    ids = _ids_to_wait_for(args, runner)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    records = []
    for run_id in ids:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            record = runner.wait(run_id, timeout=left)
        except TimeoutError as exc:
            print(f"nbrunner: {exc}", file=sys.stderr)
            return 1
        records.append(record)
        if not args.json:
            print(_outcome(record), flush=True)
    if args.json:  # one run named: its record, as before; more: a list
        _print_json(
            records[0].to_dict()
            if len(args.ids) == 1 and not (args.group or args.sweep)
            else [r.to_dict() for r in records]
        )
    return 0 if all(r.status is RunStatus.SUCCEEDED for r in records) else 1


def _outcome(record: RunRecord) -> str:
    return (
        f"run {record.id} {record.status.value}"
        + (f" (exit code {record.exit_code})" if record.exit_code is not None else "")
        + (f": {record.reason}" if record.reason else "")
    )


@verb("worker")
def _worker(args: argparse.Namespace, runner: Runner) -> int:
    """The home's service in the foreground, printing each change, until Ctrl-C."""
    from .contact import info
    from .service import Service

    print(f"nbrunner worker on {runner.home}; Ctrl-C to stop (runs keep going)", flush=True)
    try:
        served = Service(runner.home, idle_exit=float("inf"), echo=True).serve()
    except KeyboardInterrupt:
        return 0
    if not served:
        pid = (info(runner.home) or {}).get("pid", "?")
        raise OperationFailed(
            f"the service of {runner.home} already runs (pid {pid}); it moves the queue "
            "already, or stop it first with `nbrunner service stop`"
        )
    return 0


@verb("service")
def _service(args: argparse.Namespace, runner: Runner) -> int:
    """Show, start or stop the home's service (runs go on when it stops)."""
    from . import contact

    if args.action in ("install", "uninstall"):
        from . import autostart

        outcome = getattr(autostart, args.action)(runner.home)
        print(json.dumps(outcome.__dict__) if args.json else outcome.message)
        return 0
    if args.action == "start":
        contact.ensure_running(runner.home)
        _started(runner.home)
    elif args.action == "stop":
        if not contact.stop(runner.home):
            raise OperationFailed(f"the service of {runner.home} did not stop within 30 s")
        print("stopped")
        return 0
    found = contact.info(runner.home)
    if args.json:
        _print_json({"running": found is not None, **(found or {})})
    elif found is None:
        print(f"no service runs for {runner.home}; the next submission starts one")
    else:
        uptime = time.time() - found["started_at"]
        print(f"service pid {found['pid']} on {runner.home}, up {uptime:.0f} s")
    return 0


def _started(home: str | os.PathLike[str], timeout: float = 30.0) -> None:
    """Wait until the service says who it is, so what is printed next is true."""
    from . import contact, platform

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = contact.info(home)
        if found and platform.is_same_process(found.get("pid"), found.get("marker")):
            return
        time.sleep(0.05)
    raise OperationFailed(
        f"the service of {home} did not start within {timeout:.0f} s; "
        f"see {os.path.join(home, contact.ERR_NAME)}"
    )


@verb("dashboard")
def _dashboard(args: argparse.Namespace, runner: Runner) -> int:
    from .ui.serve import serve

    return serve(
        runner.home,
        port=args.port,
        ip=args.ip,
        open_browser=not args.no_browser,
        modules_file=args.modules,
    )


@verb("config")
def _config(args: argparse.Namespace, runner: Runner) -> int:
    if args.key is None:
        values = runner.config()
        if args.json:
            _print_json(values)
        else:
            for key, value in sorted(values.items()):
                print(f"{key} = {json.dumps(value)}")
        return 0
    value = runner.config(args.key, args.value)
    print(json.dumps({args.key: value}) if args.json else json.dumps(value))
    return 0


# -- argument parsing ------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too, pointing at the help that lists what is allowed."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _checked(check: Callable[[Any], Any]) -> Callable[[str], Any]:
    """An argparse type from a check: the check's own message becomes the error line."""

    def parse(text: str) -> Any:
        try:
            return check(_number_or_text(text))
        except BadInput as exc:  # a ValueError, which argparse would replace by its own words
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _number_or_text(text: str) -> int | float | str:
    """The number the text spells, so a message shows -1, not '-1'; else the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _count(
    what: str, maximum: int = checks.SQLITE_INT_MAX, minimum: int = 0
) -> Callable[[str], int]:
    return _checked(lambda value: checks.whole_number(value, what, minimum, maximum))


def _path(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.strip():  # "" from an unset shell variable would mean the default
            raise argparse.ArgumentTypeError(f"{flag} needs a path, got {text!r}")
        return text

    return parse


class _RunHelp(argparse.Action):
    """`run --help`; after a module name (`run train --help`) it lists that module's params
    too, once the whole line is read: the home that holds the module may be named after it."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=False)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, "module", None) is None:
            parser.print_help()
            parser.exit()
        setattr(namespace, self.dest, True)


def _add_param_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{what} (`nbrunner run MODULE --help` lists them); a value that starts with - "
        "is given as -p KEY=-VALUE and reaches the run as --KEY=-VALUE",
    )


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--home",
        type=_path("--home"),
        default=argparse.SUPPRESS,
        help="nbrunner home (default: $NBRUNNER_HOME or ~/.nbrunner)",
    )
    common.add_argument(
        "--modules",
        type=_path("--modules"),
        default=argparse.SUPPRESS,
        help="modules file (default: $NBRUNNER_MODULES or HOME/modules.toml)",
    )
    listing = _Parser(add_help=False)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    parser = _Parser(
        prog="nbrunner",
        parents=[common],
        description="Run many jobs at once, from Jupyter or here.",
    )
    parser.add_argument("--version", action="version", version=f"nbrunner {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def add(
        name: str, help_text: str, *parents: argparse.ArgumentParser, **options: Any
    ) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=help_text, parents=[common, *parents], **options)

    add("modules", "list the modules you can run", listing)
    run = add("run", "queue a run of a module; prints its id", listing, add_help=False)
    run.set_defaults(run_parser=run)
    run.add_argument(
        "-h", "--help", action=_RunHelp, help="show this help; after MODULE, its parameters too"
    )
    run.add_argument("module", help="the module to run (`nbrunner modules` lists them)")
    _add_param_option(run, "a parameter of the module, once per -p")
    run.add_argument(
        "--priority",
        type=_checked(checks.priority),
        default=0,
        metavar="N",
        help=f"higher starts first (±{checks.PRIORITY_LIMIT})",
    )
    run.add_argument(
        "--timeout",
        type=_checked(checks.timeout),
        metavar="SECONDS",
        help="seconds before the run is stopped",
    )
    run.add_argument("--group", help="queue group (its own limit: config group.NAME N)")
    run.add_argument(
        "--after",
        type=_checked(checks.run_id),
        action="append",
        default=[],
        metavar="ID",
        help="start only after this run has succeeded",
    )
    run.add_argument("--wait", action="store_true", help="wait for it to end")
    run.add_argument(
        "--backend",
        choices=BACKENDS,
        help="where it runs (default: config backend); ray uses config ray.address",
    )
    table = _Parser(add_help=False)
    table.add_argument("--group", help="only runs of this group")
    table.add_argument("--sweep", help="only runs of this sweep (`nbrunner sweep` prints it)")
    table.add_argument(
        "--diff", action="store_true", help="show only the params that differ between the runs"
    )
    add("ps", "list active runs with their priority and place in the queue", listing, table)
    history = add("history", "list past and present runs, newest first", listing, table)
    history.add_argument("--status")
    history.add_argument("--module")
    history.add_argument("--since", help="submitted at or after (ISO date/time)")
    history.add_argument("--until", help="submitted before (ISO date/time)")
    history.add_argument(
        "--text", help="text found in params (as shown: lr=0.001), module, group or reason"
    )
    history.add_argument(
        "--metric", help="add the last and best value each run reported of this metric"
    )
    history.add_argument(
        "--sort",
        metavar="KEY",
        help="order by a column, a param or a metric (its last value); --sort=-KEY descends",
    )
    history.add_argument("--limit", type=_count("limit"), default=50)
    history.add_argument("--offset", type=_count("offset"), default=0)
    best = add("best", "the run of a sweep or group whose metric is best, with its params", listing)
    best.add_argument(
        "--metric",
        required=True,
        metavar="NAME[:max|min]",
        help="the metric's last value decides; max or min (default: guessed from the name)",
    )
    best.add_argument("--sweep", help="among the runs of this sweep")
    best.add_argument("--group", help="among the runs of this group")
    best.add_argument("--module", help="among the runs of this module")
    best.add_argument("--status", help="among the runs in this state (e.g. succeeded)")
    sweep = add("sweep", "queue one run per point of a grid (or a random sample)", listing)
    sweep.add_argument("module", help="the module to run (`nbrunner modules` lists them)")
    _add_param_option(sweep, "a parameter and its values, comma-separated (-p lr=1e-3,1e-4)")
    sweep.add_argument(
        "--random",
        type=_count("the number of points", minimum=1),
        metavar="N",
        help="N points drawn from the values",
    )
    sweep.add_argument("--seed", type=int, help="seed of --random: the same seed, the same points")
    sweep.add_argument("--name", help="the sweep id (default: MODULE-xxxxxx)")
    sweep.add_argument("--priority", type=_checked(checks.priority), default=0, metavar="N")
    sweep.add_argument("--timeout", type=_checked(checks.timeout), metavar="SECONDS")
    sweep.add_argument("--group", help="queue group (its own limit: config group.NAME N)")
    sweep.add_argument("--backend", choices=BACKENDS, help="where the runs go")
    sweep.add_argument(
        "--prune",
        metavar="METRIC:max|min",
        help="stop runs behind the sweep's median at the same step (median stopping rule)",
    )
    sweep.add_argument(
        "--prune-grace",
        type=_count("prune grace"),
        metavar="STEPS",
        help=f"judge no run before this step (default {DEFAULT_GRACE})",
    )
    sweep.add_argument(
        "--prune-min-peers",
        type=_count("prune min peers"),
        metavar="N",
        help=f"judge a run only against N peers or more (default {DEFAULT_MIN_PEERS})",
    )
    scalars = add("scalars", "what runs reported (nbrunner.report): a summary, or every point")
    scalars.add_argument("ids", nargs="*", metavar="ID")
    scalars.add_argument("--group", help="every run of this group")
    scalars.add_argument("--sweep", help="every run of this sweep")
    scalars.add_argument("--name", action="append", default=[], help="only this metric")
    scalars.add_argument("--points", action="store_true", help="every point, tab-separated")
    scalars.add_argument("--json", action="store_true", help="every point, as JSON")
    show = add("show", "show one run's record; without ID, the home and its disk usage", listing)
    show.add_argument("id", nargs="?")
    prune = add("prune", "remove ended runs older than an age, with their logs", listing)
    prune.add_argument(
        "--older-than", required=True, metavar="AGE", help="an age like 30d, 12h, 2w"
    )
    prune.add_argument(
        "--keep-failed", action="store_true", help="keep failed, timed-out and lost runs"
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    for name, help_text in (
        ("pause", "suspend a running run's whole process tree (it keeps its slot)"),
        ("resume", "continue a paused run"),
        ("front", "move a queued run to the front of the queue"),
    ):
        add(name, help_text, listing).add_argument("id")
    cancel = add("cancel", "cancel runs: queued ones leave the queue, started ones stop", listing)
    cancel.add_argument("ids", nargs="*", metavar="ID")
    cancel.add_argument("--all", action="store_true", help="every queued and running run")
    cancel.add_argument("--group", help="every queued and running run of this group")
    cancel.add_argument("--sweep", help="every queued and running run of this sweep")
    restart = add("restart", "run again with the same module and params, or some changed")
    restart.add_argument("id")
    _add_param_option(restart, "a changed parameter, once per -p")
    restart.add_argument(
        "--priority", type=_checked(checks.priority), metavar="N", help="the new run's priority"
    )
    restart.add_argument("--wait", action="store_true", help="wait for the new run to end")
    priority = add("priority", "give a queued run another priority (higher starts first)", listing)
    priority.add_argument("id")
    priority.add_argument("priority", type=_checked(checks.priority), metavar="N")
    metrics = add("metrics", "counters: runs by status, mean wait and run time", listing)
    metrics.add_argument("--prometheus", action="store_true", help="Prometheus text format")
    logs = add("logs", "print a run's log")
    logs.add_argument("id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing as it grows")
    logs.add_argument("--tail", type=_count("lines"), metavar="N", help="only the last N lines")
    logs.add_argument(
        "--raw", action="store_true", help="the bytes as written (progress bars not collapsed)"
    )
    logs.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="the run's colours (ANSI codes): auto keeps them only on a terminal",
    )
    wait = add("wait", "wait for runs to end; exit status 0 if all succeeded", listing)
    wait.add_argument("ids", nargs="*", metavar="ID")
    wait.add_argument("--group", help="every run of this group")
    wait.add_argument("--sweep", help="every run of this sweep")
    wait.add_argument(
        "--timeout",
        type=_checked(checks.timeout),
        metavar="SECONDS",
        help="seconds to wait at most",
    )
    add("worker", "run the home's service in the foreground, printing each change")
    service = add("service", "show, start or stop the home's service", listing)
    service.add_argument(
        "action",
        nargs="?",
        choices=("status", "start", "stop", "install", "uninstall"),
        default="status",
        help="install / uninstall: start the service at login (queued runs survive a reboot)",
    )
    dashboard = add("dashboard", "serve the dashboard as a web app (Voila)")
    dashboard.add_argument("--port", type=_count("port", 65535), default=8866)
    dashboard.add_argument("--ip", default="127.0.0.1")
    dashboard.add_argument("--no-browser", action="store_true")
    config = add("config", "show or set settings (max_concurrent, paused, group.NAME...)", listing)
    config.add_argument("key", nargs="?")
    config.add_argument("value", nargs="?")
    return parser


def _spaced_param(argv: Sequence[str]) -> str | None:
    """`-p n_estimators 10` (argparse would only say "unrecognized arguments: 10"): the
    one-line hint to write it `-p n_estimators=10`."""
    for flag, key, value in zip(argv, argv[1:], argv[2:], strict=False):
        if flag in ("-p", "--param") and "=" not in key and not value.startswith("-"):
            return f"parameters are given as -p KEY=VALUE: write -p {key}={value}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    hint = _spaced_param(sys.argv[1:] if argv is None else argv)
    if hint:
        print(f"nbrunner: error: {hint}", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    home = getattr(args, "home", None)
    args.modules = getattr(args, "modules", None)
    try:
        # the worker is the service itself, and `service stop` must not start one
        keep = args.verb not in ("worker", "service")
        runner = Runner(home, args.modules, start=False, keep_service=keep)
        code = _HANDLERS[args.verb](args, runner)
    except BadInput as exc:
        print(f"nbrunner: error: {exc}", file=sys.stderr)
        return 2
    except NbrunnerError as exc:
        print(f"nbrunner: failed: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
