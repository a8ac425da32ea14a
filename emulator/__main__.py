"""Command line: serve a generated dataset until killed.

    python -m emulator --port 8765 --orgs demo=3 --prs 40 --seed 7 --latency 0.05
    python -m emulator --orgs acme=2 globex=1 --app-id 12345 --app-installations acme=101,globex=102 \
        --app-key app.pem
"""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

from emulator.data import Dataset
from emulator.faults import FaultMix
from emulator.server import GitHubEmulator

logger = logging.getLogger("emulator")


def _orgs(values: list[str]) -> dict[str, int]:
    """`demo=3 acme=2` or `demo=3,acme=2` -> {"demo": 3, "acme": 2}."""
    orgs: dict[str, int] = {}
    for item in ",".join(values).split(","):
        name, _, count = item.partition("=")
        orgs[name.strip()] = int(count or 1)
    return orgs


def _app_public_key(path: Path) -> str:
    """The public key of the App's private key at `path`; a new key written there when there is
    none (the workers then read it with PR_ANALYTICS_GITHUB_APP_PRIVATE_KEY_PATH)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
        logger.info("wrote a new private key of the App to %s", path)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--orgs", nargs="+", default=["demo=3"], help="login=repos, e.g. demo=3")
    parser.add_argument("--prs", default="40", help="PRs per repo, or a comma list cycled over repos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    parser.add_argument("--base-path", default="", help='e.g. "/api/v3" like GitHub Enterprise')
    parser.add_argument("--no-edge-cases", action="store_true")
    parser.add_argument("--rate-limit", type=int, default=5000)
    parser.add_argument("--rate-limit-window", type=float, default=3600)
    parser.add_argument("--graphql-points", type=int, default=5000,
                        help="GraphQL points per token per rate-limit window")
    parser.add_argument("--graphql-heavy-nodes", type=int, default=None,
                        help="answer 502 to a GraphQL query asking for more nodes than this")
    parser.add_argument("--no-graphql", action="store_true",
                        help="serve no GraphQL API: POST /graphql answers 404 (an old GHES, a proxy)")
    parser.add_argument("--token", action="append", help="accepted token (repeatable); default: any")
    parser.add_argument("--fault-mix", default="",
                        help="random faults on every request, kind=rate, e.g. 502=0.05,429=0.02,drop=0.01")
    parser.add_argument("--fault-seed", type=int, default=0)
    parser.add_argument("--fault-retry-after", type=float, default=None,
                        help="the retry-after header of the mix's 429s and secondary limits, s")
    parser.add_argument("--app-id", help="serve a GitHub App with this id (its JWTs checked)")
    parser.add_argument("--app-installations", default="",
                        help="the App's installation id per organisation, e.g. acme=101,globex=102")
    parser.add_argument("--app-key", type=Path, default=Path("emulator-app.pem"),
                        help="the App's private key (PEM); written there when missing")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    prs = [int(p) for p in args.prs.split(",")]
    dataset = Dataset.generate(_orgs(args.orgs), prs if len(prs) > 1 else prs[0], seed=args.seed,
                               edge_cases=not args.no_edge_cases)
    app: dict = {}
    if args.app_id:
        installations = {org.strip().lower(): int(number) for org, _, number in
                         (item.partition("=") for item in args.app_installations.split(",") if item.strip())}
        app = {"app_id": args.app_id, "app_public_key": _app_public_key(args.app_key),
               "app_installations": installations}
    emulator = GitHubEmulator(dataset, latency=args.latency, base_path=args.base_path,
                              rate_limit=args.rate_limit, rate_limit_window=args.rate_limit_window,
                              tokens=set(args.token) if args.token else None, port=args.port,
                              graphql_points=args.graphql_points,
                              graphql_heavy_nodes=args.graphql_heavy_nodes,
                              graphql=not args.no_graphql, **app)
    if args.fault_mix:
        rates = {kind: float(rate) for kind, _, rate in (item.partition("=") for item in args.fault_mix.split(","))}
        emulator.faults.set_mix(FaultMix(rates, seed=args.fault_seed, retry_after=args.fault_retry_after))
    with emulator:  # start() logs the URL
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            logger.info("stopping")


if __name__ == "__main__":
    main()
