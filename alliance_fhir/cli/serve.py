"""CLI commands of the long-running service: ``serve``, ``subscribe`` and ``cds-token``.

``serve`` listens at once, then (in the background, retried until the FHIR server answers)
checks the server and manages its Subscription (unless ``--no-subscribe``, polling, or an event
signing key: then the EHR's own platform notifies), and scores what notifications point at, or
what the sync every ``--poll-minutes`` finds where the EHR has no Subscriptions; ``subscribe`` manages the Subscription alone (for a service that
another process, a proxy or a different host runs); ``cds-token`` signs a CDS Hooks client's
JWT as an EHR would (for the demo and for testing a registration). The webhook secret never appears as an
option or in a log line: it comes from ``$ALLIANCE_FHIR_WEBHOOK_SECRET``, ``[serve]
webhook_secret`` in the config file, or the state database (generated once).
Exit codes: 0 success (also after SIGTERM); 2 configuration errors, or the port cannot be served. A FHIR
server that is down at start is not an exit: ``/readyz`` says 503 until it answers.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from .._config_file import ConfigFile
from ..errors import ConfigError
from ..server.state import ServerPair, StateStore
from ..server.sync import SyncOptions
from ..server.writeback_plan import load_writeback
from ..service.cds_auth import CdsSettings, load_cds_settings
from ..service.settings import (
    ServeSettings,
    configured_webhook_secret,
    event_signing,
    load_serve_settings,
    webhook_secret,
)
from ..service.signing import EventSigning
from ..service.subscription import ensure_subscription, remove_subscriptions
from ..service.worker import Worker
from ._common import (
    CaOption,
    ConfidentialityOption,
    ConfigOption,
    InstrumentsOption,
    JsonOption,
    ResultsServerOption,
    SensitivityOption,
    ServerOption,
    StateOption,
    command_catalog,
    command_labels,
    emit_json,
    open_client,
    open_servers,
    say,
    server_config,
)
from ._output import configure_logging

__all__ = ["cds_demo_lines", "path_line", "register"]

logger = logging.getLogger("alliance_fhir.serve")
ChannelOption = Annotated[
    str | None, typer.Option("--channel", help="rest-hook (classic R4, default) or topic (R5 Backport IG).")
]


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``subscribe`` and ``cds-token`` to ``app``."""
    app.command("serve")(serve)
    app.command("subscribe")(subscribe)
    app.command("cds-token")(cds_token)


def serve(
    ctx: typer.Context,
    server: ServerOption = None,
    results_server: ResultsServerOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8765,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            help="How the FHIR server and EHRs reach us (default http://HOST:PORT); "
            "the Subscription's endpoint is this plus /hook, CDS Hooks tokens' aud this plus /cds-services/ID.",
        ),
    ] = None,
    no_subscribe: Annotated[
        bool, typer.Option("--no-subscribe", help="Leave the Subscription alone (manage it with `subscribe`).")
    ] = False,
    state: StateOption = None,
    config: ConfigOption = None,
    channel: ChannelOption = None,
    safety_net_minutes: Annotated[
        float | None, typer.Option("--safety-net-minutes", help="Full incremental sync this often (default 15).")
    ] = None,
    poll_minutes: Annotated[
        float | None,
        typer.Option(
            "--poll-minutes",
            help="Poll instead of subscribing (EHRs without FHIR Subscriptions): an incremental sync this often; "
            'the same as [serve] mode = "poll" with safety_net_minutes.',
        ),
    ] = None,
    ca_bundle: CaOption = None,
    instruments: InstrumentsOption = None,
    confidentiality: ConfidentialityOption = None,
    sensitivity: SensitivityOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also log one line per HTTP exchange with the FHIR server.")
    ] = False,
) -> None:
    """Score QuestionnaireResponses and update the patient's signals within seconds of the server telling us they were written.

    The same app serves the CDS Hooks ``patient-view`` service (``/cds-services``) for the EHRs in ``[[cds.clients]]``.
    """
    _logging(verbose)
    file = ConfigFile.read(config)  # read once, for all four tables below
    cfg = server_config(server, file, ca_bundle=ca_bundle, state=state, results_server=results_server)
    labels = command_labels(file, confidentiality, sensitivity)
    if poll_minutes is not None and safety_net_minutes is not None:
        raise ConfigError("give --poll-minutes or --safety-net-minutes, not both (polling is that sync, made the path)")
    settings = _settings(
        file,
        channel=channel,
        safety_net_minutes=poll_minutes if poll_minutes is not None else safety_net_minutes,
        mode="poll" if poll_minutes is not None else None,
    )
    signing = event_signing(settings)
    cds_settings = load_cds_settings(file)
    base = (public_url or f"http://{host}:{port}").rstrip("/")
    endpoint = f"{base}/hook"
    if public_url is None and host in ("0.0.0.0", "::"):
        say(f"listening on {host} without --public-url; the Subscription will name {endpoint}", "warning")
    catalog = command_catalog(ctx, instruments)
    subscribing = not (no_subscribe or settings.polling or signing is not None)
    with StateStore(cfg.state_location()) as store, open_servers(cfg) as servers:
        # with signed events the EHR's platform sends no header of ours: the secret only when the site configured one
        secret = configured_webhook_secret(settings) if signing is not None else webhook_secret(settings, store)
        client = servers.source  # the Subscription is on the source; results go to servers.results

        def prepare() -> None:  # retried by the worker until the servers answer: serve starts during an outage
            client.r4_capabilities()
            servers.results.r4_capabilities()
            if subscribing:
                assert secret is not None
                vendor = catalog.forms.search_values(server=cfg.base_url)  # the EHR's own forms a map claims
                result = ensure_subscription(client, list(catalog), endpoint, secret, settings.channel, vendor)
                logger.info(
                    "Subscription/%s %s (%s, endpoint %s)",
                    result.subscription_id,
                    result.action,
                    settings.channel,
                    endpoint,
                )

        from ..service.cds import CdsService, cds_routes
        from ..service.run import run_service  # the web stack, only for this command

        worker = Worker(
            client,
            catalog,
            store,
            settings,
            options=SyncOptions(security=labels, writeback=load_writeback(file)),
            prepare=prepare,
            results=servers.results if servers.split else None,
        )
        cds = CdsService.build(
            client, catalog, store, cds_settings, base, worker.metrics, servers.results if servers.split else None
        )
        _log_cds(cds_settings, base)
        logger.info(
            "listening on %s:%d for %s; %s",
            host,
            port,
            ServerPair(cfg.base_url, cfg.results_url),
            path_line(settings, signing, no_subscribe),
        )
        routes = tuple(cds_routes(cds, max_body_bytes=settings.max_body_bytes))
        started = run_service(worker, secret, settings, host=host, port=port, extra_routes=routes, signing=signing)
    if not started:
        say(f"could not serve on {host}:{port} (see the log above)", "error")
        raise typer.Exit(2)
    raise typer.Exit(0)


def path_line(settings: ServeSettings, signing: EventSigning | None, no_subscribe: bool) -> str:
    """How serve learns of new responses, and why: the start-up line's second half (no secret, no key)."""
    every = f"{settings.safety_net_minutes:g} min"
    if settings.polling:
        return f"path: polling, an incremental sync every {every} (mode = poll: for EHRs without FHIR Subscriptions)"
    if signing is not None:
        return (
            f"path: signed events from the EHR's platform ({signing.header}, {signing.method}; the Subscription is "
            f"the EHR's, as an event signing key is set), with a safety-net sync every {every}"
        )
    if no_subscribe:
        return f"path: notifications, the Subscription managed elsewhere (--no-subscribe), with a safety-net sync every {every}"
    return f"path: subscription ({settings.channel}), with a safety-net sync every {every}"


def subscribe(
    ctx: typer.Context,
    server: ServerOption = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="The URL the FHIR server notifies: serve's public URL + /hook.")
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Delete our Subscription (and topic) instead.")] = False,
    state: StateOption = None,
    config: ConfigOption = None,
    channel: ChannelOption = None,
    ca_bundle: CaOption = None,
    instruments: InstrumentsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create or update serve's Subscription on the server (found again by our tag), or remove it."""
    _logging(False)
    file = ConfigFile.read(config)  # read once, for the server and [serve]
    cfg = server_config(server, file, ca_bundle=ca_bundle, state=state)
    if not remove and not endpoint:
        say("--endpoint URL is required (or --remove)", "error")
        raise typer.Exit(2)
    settings = _settings(file, channel=channel)
    with open_client(cfg) as client:
        if remove:
            removed = remove_subscriptions(client)
            summary: dict[str, object] = {"action": "removed", "subscriptions": removed}
            message = f"removed {removed} Subscription(s) of alliance-fhir serve from {cfg.base_url}"
        else:
            assert endpoint is not None
            with StateStore(cfg.state_location()) as store:
                secret = webhook_secret(settings, store)
            catalog = command_catalog(ctx, instruments)
            vendor = catalog.forms.search_values(server=cfg.base_url)  # the EHR's own forms a map claims
            result = ensure_subscription(client, list(catalog), endpoint, secret, settings.channel, vendor)
            summary = {
                "action": result.action,
                "subscription": f"Subscription/{result.subscription_id}",
                "channel": settings.channel,
                "endpoint": endpoint,
                "stale_removed": result.removed,
            }
            message = f"Subscription/{result.subscription_id} {result.action} ({settings.channel}, endpoint {endpoint})"
    if as_json:
        emit_json(summary)
    else:
        say(message)
    raise typer.Exit(0)


def cds_token(
    key: Annotated[Path, typer.Option("--key", help="PEM file of the CDS client's private key (ES384 or RS384).")],
    kid: Annotated[str, typer.Option("--kid", help="The key's kid in the client's JWKS.")],
    issuer: Annotated[str, typer.Option("--issuer", help="The client's iss, as in [[cds.clients]].")],
    audience: Annotated[
        str, typer.Option("--audience", help="The hook URL called: public URL + /cds-services/alliance-patient-view.")
    ],
    algorithm: Annotated[str, typer.Option("--algorithm", help="ES384 (default) or RS384.")] = "ES384",
    lifetime: Annotated[int, typer.Option("--lifetime", min=1, max=300, help="Seconds until exp.")] = 60,
) -> None:
    """Print a CDS Hooks client JWT signed like an EHR signs one (for the demo and for testing a registration)."""
    from ..service.cds_auth import ALGORITHMS
    from ..service.cds_demo import mint_token

    if algorithm not in ALGORITHMS:
        say("--algorithm must be ES384 or RS384", "error")
        raise typer.Exit(2)
    typer.echo(mint_token(key, issuer=issuer, kid=kid, audience=audience, lifetime=lifetime, algorithm=algorithm))


def cds_demo_lines(fhir_base: str, port: int = 8765, results_base: str | None = None) -> list[str]:
    """What ``demo`` prints so that a CDS Hooks call for the rupture client works when followed.

    The demo EHR's key, JWKS and config go to a private folder under the data directory; the
    ``curl`` line mints a fresh token (``cds-token``) each time it runs, so it never goes stale.
    With ``results_base`` (the two-server demo) the config names the results store, so the card
    is computed from the scores and signals there; its own folder keeps the one-server demo's intact.
    """
    from ..server.settings import data_dir
    from ..service.cds import SERVICE_ID
    from ..service.cds_demo import DEMO_ISSUER, DEMO_KID, write_demo_client

    folder = data_dir() / ("cds-demo-two-servers" if results_base else "cds-demo")
    files = write_demo_client(folder, fhir_base, results_base)
    exe = _this_command()
    hook = f"http://127.0.0.1:{port}/cds-services/{SERVICE_ID}"
    body = {
        "hook": "patient-view",
        "hookInstance": "3f1c2a9e-6b7d-4c1e-9a53-0d2b8e4f7a10",
        "fhirServer": fhir_base,
        "context": {"userId": "Practitioner/afdemo-t1", "patientId": "afdemo-rupture"},
    }
    mint = (
        f"{exe} cds-token --key {shlex.quote(str(files.key))} --kid {DEMO_KID} --issuer {DEMO_ISSUER} --audience {hook}"
    )
    reads = f" (the card is computed from the results store {results_base})" if results_base else ""
    return [
        f"CDS Hooks: the demo EHR's key, JWKS and config are in {files.folder}. Start the service{reads}:",
        f"  {exe} serve --config {shlex.quote(str(files.config))} --no-subscribe --port {port}",
        "then, in another shell, call the patient-view hook for the rupture client (Patient/afdemo-rupture):",
        f"  curl -sS -X POST {hook} -H 'Content-Type: application/json' "
        f'-H "Authorization: Bearer $({mint})" -d {shlex.quote(json.dumps(body))}',
    ]


def _this_command() -> str:
    launched = Path(sys.argv[0])
    if launched.name == "alliance-fhir" and launched.exists():
        return shlex.quote(str(launched.resolve()))
    return f"{shlex.quote(sys.executable)} -m alliance_fhir"


def _logging(verbose: bool) -> None:
    configure_logging(logging.INFO)  # the service reports what it does; --verbose adds one line per HTTP exchange
    logging.getLogger("alliance_fhir.http").setLevel(logging.INFO if verbose else logging.WARNING)


def _log_cds(settings: CdsSettings, base: str) -> None:
    if settings.clients:
        issuers = ", ".join(c.issuer for c in settings.clients)
        logger.info("CDS Hooks: discovery at %s/cds-services; trusted clients: %s", base, issuers)
    else:
        logger.warning("CDS Hooks: no [[cds.clients]] in the config file, so every hook call is refused (401)")


def _settings(config: ConfigFile, **overrides: object) -> ServeSettings:
    return load_serve_settings(config, **overrides)
