"""Command line: hdrlog attach | demo | replay | setup | ps | doctor | stats | completion."""

from __future__ import annotations

import argparse
import sys
import threading

from hdrlog import __version__
from hdrlog.errors import HdrlogError

ATTACH_EPILOG = """\
examples:
  hdrlog attach --pid $(pgrep -o nginx)              # nginx master: covers its workers, also after reloads
  hdrlog attach --pid 4242 --output /var/tmp/h.jsonl --duration 60
  hdrlog attach --pid 4242 --format pretty            # one readable line per exchange
  hdrlog attach --pid 4242 --status 5xx --path '/api/*' --header x-request-id
  hdrlog attach --pid 4242 --mcp                      # only MCP traffic
  hdrlog attach --pid 4242 -o /var/log/h.jsonl --rotate-mb 100 --keep 10
  hdrlog attach --pid 4242 --metrics 127.0.0.1:9464   # Prometheus; dashboard: src/hdrlog/grafana/hdrlog.json
  hdrlog attach --pid 4242 --pcap /tmp/h.pcapng --show-secrets --duration 30

output: one JSON object per line on stdout (or --output FILE, created mode 0600). Records of
type "http" carry pid, tid, comm, lib, direction ("in" = the process read it, "out" = it wrote it),
conn {id, role, local, peer, attribution}, proto, kind, method/path/authority or status/latency_ms,
headers [[name, value], ...] in wire order, truncated. Other types: attach, loss, exit, summary.
Diagnostics (the "attached" line, the exit summary) go to stderr.

secrets: values of Authorization, Cookie, Set-Cookie, API-key style headers and secret-looking query
parameters are replaced by <redacted:HASH> (an HMAC with a per-machine key in /var/lib/hdrlog, so equal
secrets correlate). --show-secrets turns that off.

needs root (or CAP_BPF + CAP_PERFMON), bcc (Debian python3-bpfcc) and kernel headers bcc can compile
against; `hdrlog setup` prepares a Debian machine. Exit codes: 0 done, 2 a clear error (nothing left
attached), 130 interrupted before attaching.
"""


def _positive_float(text: str) -> float:
    v = float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hdrlog",
        description="Show, live, the decrypted HTTP headers a running HTTPS gateway reads and writes "
        "(eBPF uprobes on its TLS library; no proxy, no restart, no keys).",
    )
    p.add_argument("--version", action="version", version=f"hdrlog {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    a = sub.add_parser(
        "attach", help="attach to running processes and print their HTTP messages",
        description="Attach to running processes' TLS functions and print every HTTP message they read "
        "and write, until Ctrl-C/SIGTERM, --duration, or every target has exited.",
        epilog=ATTACH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--pid", type=int, action="append", required=True, metavar="PID",
                   help="process to attach to (repeatable); its child processes are followed, including "
                   "ones started later (nginx workers after a reload)")
    a.add_argument("--output", "-o", metavar="FILE", help="write JSON lines to FILE (mode 0600) instead of stdout")
    a.add_argument("--format", choices=("jsonl", "pretty"), default=None,
                   help="jsonl (default; pretty when stdout is a terminal and no --output)")
    a.add_argument("--duration", type=_positive_float, metavar="SEC", help="stop after SEC seconds")
    a.add_argument("--max-bytes", type=int, default=16384, metavar="N",
                   help="plaintext bytes captured per TLS call, or per TLS record where OpenSSL is probed at "
                   "its copy sites (default 16384); longer calls are counted and marked truncated")
    a.add_argument("--ringbuf-mb", type=int, default=4, metavar="MB",
                   help="BPF ring buffer size in MiB, a power of two (default 4); drops are reported")
    # for tests: a ring buffer of N pages (overrides --ringbuf-mb), small enough to overflow on purpose
    a.add_argument("--ringbuf-pages", type=int, default=None, help=argparse.SUPPRESS)
    a.add_argument("--show-secrets", action="store_true", help="do not redact credentials (see below)")
    _add_redact_arguments(a)
    a.add_argument("--no-follow", action="store_true", help="do not follow child processes of --pid")
    a.add_argument("--placement", choices=("auto", "functions", "entry"), default="auto",
                   help="auto (default): OpenSSL 3.0/1.1.1 reads and writes probed inside the record layer, one "
                   "probe per record where plaintext is copied (no return probe, nothing for a read that finds "
                   "no data), when the machine code proves where SSL*, record type and peek are there; "
                   "otherwise as `functions`. functions: probes on the TLS functions, each on an instruction "
                   "the kernel emulates (or on the internal function SSL_read/SSL_read_ex share) when the "
                   "machine code proves it equivalent. entry: every probe at its symbol's first instruction. "
                   "-v prints every site and why")
    a.add_argument("--verbose", "-v", action="store_true",
                   help="print where each probe was placed and why (stderr)")
    a.add_argument("--mcp-payloads", action="store_true",
                   help="also log MCP tool arguments, results and error messages (off: only method, tool, "
                   "resource, prompt, ids, session, version and error codes)")
    a.add_argument("--record-events", metavar="FILE",
                   help="also save raw kernel events to FILE for `hdrlog replay` (contains plaintext, "
                   "secrets included; mode 0600)")
    _add_operator_arguments(a)

    d = sub.add_parser("demo", help="run a built-in HTTPS demo gateway and client, attached, and show the capture",
                       description="Start a loopback HTTPS demo gateway (Python ssl) and a client sending "
                       "varied requests, attach hdrlog to the gateway, show what was captured and a summary.")
    d.add_argument("--jsonl", action="store_true", help="print JSON lines instead of the readable view")
    d.add_argument("--requests", type=int, default=12, metavar="N", help="client requests to send (default 12)")

    r = sub.add_parser("replay", help="turn raw events saved with --record-events into records",
                       description="Replay a raw event recording through the same pipeline as attach.")
    r.add_argument("file")
    r.add_argument("--format", choices=("jsonl", "pretty"), default="jsonl")
    r.add_argument("--show-secrets", action="store_true", help="do not redact credentials")
    _add_redact_arguments(r)
    r.add_argument("--mcp-payloads", action="store_true", help="also log MCP tool arguments and results")
    r.add_argument("--pcap", metavar="FILE", help="also write the decrypted streams as pcapng (needs --show-secrets)")
    from hdrlog.output import add_filter_arguments

    add_filter_arguments(r)

    s = sub.add_parser("setup", help="prepare this machine: kernel headers for bcc, tracefs",
                       description="Link Debian's kernel headers where bcc looks for them (installing "
                       "linux-headers-amd64 if none) and mount tracefs. Safe to re-run.")
    s.add_argument("--no-apt", action="store_true", help="never run apt-get")

    from hdrlog import completion, doctor, ps, stats

    ps.add_parser(sub)
    doctor.add_parser(sub)
    stats.add_parser(sub)
    completion.add_parser(sub)
    return p


def _add_redact_arguments(a) -> None:
    a.add_argument("--redact", action="append", default=[], metavar="NAME",
                   help="also redact the values of header NAME (any case; repeatable), on top of the default list")
    a.add_argument("--redact-pattern", action="append", default=[], metavar="REGEX",
                   help="also redact the values of headers whose name matches REGEX (searched, any case; "
                   "repeatable), e.g. '^x-internal-'")


def _redactor_options(args) -> dict:
    """extra_names/extra_patterns for Redactor, the patterns checked before anything is attached."""
    from hdrlog.redact import compile_patterns

    try:
        compile_patterns(args.redact_pattern)
    except ValueError as exc:
        raise HdrlogError(str(exc)) from None
    return {"extra_names": tuple(args.redact), "extra_patterns": tuple(args.redact_pattern)}


def _add_operator_arguments(a) -> None:
    """attach's output, filter, statistics, metrics and pcap options (output.py, stats.py, metrics.py, pcap.py)."""
    from hdrlog.output import add_filter_arguments

    add_filter_arguments(a)
    g = a.add_argument_group("files, statistics, metrics, pcap")
    g.add_argument("--rotate-mb", type=_positive_float, metavar="MB",
                   help="with --output: start a new file when it reaches MB MiB (FILE -> FILE.1 -> ...)")
    g.add_argument("--keep", type=int, default=5, metavar="N", help="rotated files kept (default 5)")
    g.add_argument("--no-stats", action="store_true", help="no statistics table on stderr at the end")
    g.add_argument("--metrics", metavar="ADDR:PORT",
                   help="serve Prometheus metrics on http://ADDR:PORT/metrics (a bare PORT means 127.0.0.1)")
    g.add_argument("--pcap", metavar="FILE",
                   help="also write the decrypted streams as pcapng (synthesized TCP/IP on the real addresses, "
                   "mode 0600); holds credentials, so it needs --show-secrets")


def _sink(fmt: str | None, output: str | None, args=None):
    from hdrlog.output import base_sink

    return base_sink(fmt, output, headers=getattr(args, "header", None) or (),
                     rotate_mb=getattr(args, "rotate_mb", None), keep=getattr(args, "keep", 5))


def _pcap(args):
    if not getattr(args, "pcap", None):
        return None
    if not args.show_secrets:
        raise HdrlogError(
            "--pcap writes the decrypted bytes as they were, credentials included (hdrlog cannot redact inside "
            "HTTP/2's compressed headers): add --show-secrets to confirm."
        )
    from hdrlog.pcap import PcapWriter

    return PcapWriter(args.pcap)


def cmd_attach(args) -> int:
    from hdrlog.session import Options, Session, install_signal_handlers

    mb = args.ringbuf_mb
    if mb < 1 or mb & (mb - 1):
        raise HdrlogError(f"--ringbuf-mb must be a power of two (1, 2, 4, ...), not {mb}.")
    pages = mb * 256
    if args.ringbuf_pages is not None:
        pages = args.ringbuf_pages
        if pages < 1 or pages & (pages - 1):
            raise HdrlogError(f"--ringbuf-pages must be a power of two (1, 2, 4, ...), not {pages}.")
    redact = _redactor_options(args)
    from hdrlog import output, session as session_mod
    from hdrlog.stats import Stats

    flt = output.Filter.from_args(args)
    stats = None if args.no_stats else Stats(headers=False)
    metrics = pcap = None
    if args.metrics:
        from hdrlog.metrics import MetricsServer

        metrics = MetricsServer.start(args.metrics)  # a busy port fails here, before anything is attached
    try:
        pcap = _pcap(args)
        base = _sink(args.format, args.output, args)
    except BaseException:
        if metrics:
            metrics.stop()
        raise
    status = base if isinstance(base, output.StatusLine) else None
    sink = output.OutputSink(base, flt, observers=[stats, metrics, status])
    stop = threading.Event()
    install_signal_handlers(stop)
    opts = Options(
        pids=args.pid, duration=args.duration, max_bytes=args.max_bytes, ringbuf_pages=pages,
        show_secrets=args.show_secrets, record_events=args.record_events, follow_children=not args.no_follow,
        placement=args.placement, verbose=args.verbose, event_tap=pcap.on_event if pcap else None,
        mcp_payloads=args.mcp_payloads, redact_names=redact["extra_names"],
        redact_patterns=redact["extra_patterns"],
    )
    session = Session(opts, sink, stop=stop)
    if metrics:
        metrics.bind(session)
    if status:
        session_mod.LOG_HOOKS.append(status.clear)
    try:
        session.start()
        session.run()
    finally:
        session.close()
        try:
            sink.close()
        except OSError:  # the reader went away, or the disk is full (session.sink.error says it)
            pass
        if status:
            session_mod.LOG_HOOKS.remove(status.clear)
        if pcap:
            pcap.close()
            session_mod.log(pcap.describe())
        if metrics:
            metrics.stop()
    if stats is not None and stats.kinds:
        sys.stderr.write(stats.short_table())
    if session.sink.error:
        raise HdrlogError(f"cannot write {args.output or 'the output'}: {session.sink.error}; hdrlog stopped and "
                          f"removed its probes.")
    return 0


def cmd_replay(args) -> int:
    from hdrlog.redact import Redactor
    from hdrlog.output import Filter, OutputSink
    from hdrlog.replay import check_recording, replay

    check_recording(args.file)
    redact = _redactor_options(args)
    pcap = _pcap(args)
    sink = OutputSink(_sink(args.format, None, args), Filter.from_args(args))
    try:
        replay(args.file, sink, Redactor(show_secrets=args.show_secrets, **redact), tap=pcap.on_event if pcap else None,
               mcp_payloads=args.mcp_payloads)
    finally:
        sink.close()
        if pcap:
            pcap.close()
            sys.stderr.write(f"hdrlog: {pcap.describe()}\n")
    return 0


def cmd_demo(args) -> int:
    from hdrlog.demo import run_demo

    return run_demo(args)


def cmd_setup(args) -> int:
    from hdrlog.setupcmd import run_setup

    return run_setup(args)


def _lazy(module: str):
    def run(args) -> int:
        import importlib

        return importlib.import_module(f"hdrlog.{module}").run(args)

    return run


COMMANDS = {"attach": cmd_attach, "demo": cmd_demo, "replay": cmd_replay, "setup": cmd_setup,
            "ps": _lazy("ps"), "doctor": _lazy("doctor"), "stats": _lazy("stats"),
            "completion": _lazy("completion")}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.cmd:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.cmd](args)
    except HdrlogError as exc:
        sys.stderr.write(f"hdrlog: error: {exc}\n")
        return exc.exit_code
    except BrokenPipeError:
        # the reader went away (e.g. `hdrlog attach ... | head -3`): exit quietly
        try:
            sys.stdout = None
        except Exception:
            pass
        return 0
    except KeyboardInterrupt:
        return 130
