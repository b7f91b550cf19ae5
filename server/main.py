"""`ledex-lsp`: the ledex language server.

    ledex-lsp                      # stdio (what editors start)
    ledex-lsp --tcp --port 2087    # TCP, for debugging with a client that connects
    python -m ledex.server         # same as ledex-lsp

Logs go to stderr (editors show them in the server's output panel), never to stdout,
which carries the protocol.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ledex import __version__


def build_parser() -> argparse.ArgumentParser:
    """Command line of ledex-lsp: --stdio (default) or --tcp --host --port, --log-level."""
    parser = argparse.ArgumentParser(prog="ledex-lsp", description="ledex language server")
    parser.add_argument("--version", action="version", version=f"ledex-lsp {__version__}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (default)")
    mode.add_argument("--tcp", action="store_true", help="listen on --host:--port instead")
    parser.add_argument("--host", default="127.0.0.1", help="TCP host (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=2087, help="TCP port (default: 2087)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ledex-lsp: serve LSP over stdio or TCP until the client exits; returns 0."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pygls").setLevel(logging.WARNING)  # pygls logs every message body at INFO
    from ledex.server.features import build

    server = build()
    if args.tcp:
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()
    return 0


if __name__ == "__main__":
    sys.exit(main())
