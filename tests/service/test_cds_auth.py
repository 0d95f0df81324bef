"""The CDS client JWT: every rule of CDS Hooks 2.0 security, one test per way a token can be wrong."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from alliance_fhir.errors import CdsAuthError, ConfigError
from alliance_fhir.server.state import StateStore
from alliance_fhir.service.cds_auth import CdsClient, CdsSettings, JwksSource, TokenVerifier, load_cds_settings

from ..support.cds_client import CdsTestClient

AUD = "https://cds.example.org/cds-services/alliance-patient-view"


@pytest.fixture(scope="module")
def ehr() -> CdsTestClient:
    return CdsTestClient()


@pytest.fixture
def store(tmp_path: Path):
    with StateStore(tmp_path / "state.db") as opened:
        yield opened


@pytest.fixture
def verifier(ehr, store, tmp_path):
    settings = CdsSettings(clients=[CdsClient(issuer=ehr.issuer, jwks_file=ehr.write_jwks(tmp_path / "jwks.json"))])
    return TokenVerifier(settings, store)


def refused(verifier: TokenVerifier, token: str, aud: str = AUD) -> str:
    with pytest.raises(CdsAuthError) as caught:
        verifier.verify(f"Bearer {token}", aud)
    return str(caught.value)


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_a_good_token_passes_with_either_algorithm(ehr, verifier, alg):
    claims = verifier.verify(f"Bearer {ehr.token(AUD, alg=alg)}", AUD)
    assert claims["iss"] == ehr.issuer and claims["aud"] == AUD


def test_aud_may_be_an_array_holding_the_url(ehr, verifier):
    assert verifier.verify(f"Bearer {ehr.token([AUD, 'https://other'])}", AUD)["iss"] == ehr.issuer


def test_wrong_aud(ehr, verifier):
    assert refused(verifier, ehr.token("https://cds.example.org/cds-services")) == "aud is not this service's URL"
    assert refused(verifier, ehr.token(AUD + "/")) == "aud is not this service's URL"


def test_bad_signature(ehr, verifier):
    other = ec.generate_private_key(ec.SECP384R1())
    assert refused(verifier, ehr.token(AUD, key=other)).startswith("bad signature")


def test_expired(ehr, verifier):
    now = int(time.time())
    assert refused(verifier, ehr.token(AUD, iat=now - 200, exp=now - 100)) == "token expired"


def test_a_lifetime_over_five_minutes(ehr, verifier):
    now = int(time.time())
    assert "lifetime" in refused(verifier, ehr.token(AUD, iat=now, exp=now + 301))


def test_iat_in_the_future(ehr, verifier):
    now = int(time.time())
    assert refused(verifier, ehr.token(AUD, iat=now + 120, exp=now + 180)) == "iat is in the future"


@pytest.mark.parametrize("claim", ["exp", "iat", "jti", "iss"])
def test_required_claims(ehr, verifier, claim):
    message = refused(verifier, ehr.token(AUD, **{claim: None}))
    assert claim in message


def test_unknown_issuer(ehr, verifier):
    stranger = CdsTestClient("https://evil.example.org", name="ehr")  # same kid names, other keys
    assert refused(verifier, stranger.token(AUD)) == "unknown issuer (not in [[cds.clients]])"


def test_replayed_jti(ehr, verifier, store):
    token = ehr.token(AUD, jti="once")
    verifier.verify(f"Bearer {token}", AUD)
    assert refused(verifier, token) == f"replayed jti from {ehr.issuer}"
    assert store.jti_count() == 1


def test_expired_jtis_are_dropped(ehr, store):
    from datetime import UTC, datetime, timedelta

    past = datetime.now(UTC) - timedelta(seconds=1)
    assert store.first_use_of_jti(ehr.issuer, "old", past)
    assert store.first_use_of_jti(ehr.issuer, "new", past + timedelta(minutes=10))
    assert store.jti_count() == 1  # the expired one went when the next was recorded


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256", "none"])
def test_only_rs384_and_es384(ehr, verifier, alg):
    if alg == "none":
        token = jwt.encode({"iss": ehr.issuer, "aud": AUD}, "", algorithm="none", headers={"kid": "ehr-es"})
    elif alg == "HS256":
        token = jwt.encode({"iss": ehr.issuer, "aud": AUD}, "k" * 32, algorithm="HS256", headers={"kid": "ehr-es"})
    else:
        key = ehr.rsa_key if alg == "RS256" else ec.generate_private_key(ec.SECP256R1())
        token = jwt.encode({"iss": ehr.issuer, "aud": AUD}, key, algorithm=alg, headers={"kid": "ehr-es"})
    assert "is not RS384 or ES384" in refused(verifier, token)


def test_the_key_must_fit_the_algorithm(ehr, verifier):
    # an RS384 token naming the EC key's kid: refused before any signature check
    assert "is not a RS384 key" in refused(verifier, ehr.token(AUD, alg="RS384", kid="ehr-es"))


def test_unknown_kid_and_no_kid(ehr, verifier):
    assert refused(verifier, ehr.token(AUD, kid="nope")).startswith("no key with this kid")
    assert refused(verifier, ehr.token(AUD, kid=None)) == "no kid in the token header"


def test_a_jku_in_the_token_is_never_fetched(ehr, store):
    attacker = CdsTestClient(ehr.issuer, name="ehr")  # claims our issuer, signs with its own key
    fetched: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url))
        return httpx.Response(200, json=ehr.jwks())

    settings = CdsSettings(clients=[CdsClient(issuer=ehr.issuer, jwks_url="https://ehr.example.org/jwks")])
    verifier = TokenVerifier(settings, store, transport=httpx.MockTransport(handler))
    token = attacker.token(AUD, jku="https://attacker.example.org/jwks", x5u="https://attacker.example.org/x5u")
    assert refused(verifier, token).startswith("bad signature")
    assert fetched == ["https://ehr.example.org/jwks"]  # only the configured URL, never the token's


def test_no_bearer_token(verifier):
    for header in (None, "", "Basic abc", "Bearer ", "Bearer not.a.jwt"):
        with pytest.raises(CdsAuthError):
            verifier.verify(header, AUD)


def test_sub_must_be_the_configured_client_id(ehr, store, tmp_path):
    client = CdsClient(issuer=ehr.issuer, jwks_file=ehr.write_jwks(tmp_path / "j.json"), client_id="the-ehr")
    verifier = TokenVerifier(CdsSettings(clients=[client]), store)
    assert "sub is not the client_id" in refused(verifier, ehr.token(AUD))
    assert verifier.verify(f"Bearer {ehr.token(AUD, sub='the-ehr')}", AUD)


# ---- the JWKS: fetched only from the configured URL, bounded, cached ----------------------------


def jwks_source(ehr, handler, **settings):
    client = CdsClient(issuer=ehr.issuer, jwks_url="https://ehr.example.org/.well-known/jwks.json")
    clock = [0.0]
    source = JwksSource(client, CdsSettings(**settings), transport=httpx.MockTransport(handler), clock=lambda: clock[0])
    return source, clock


def test_jwks_too_large(ehr):
    big = json.dumps({"keys": ehr.jwks()["keys"], "padding": "x" * 70_000}).encode()
    for headers in ({}, {"content-length": str(len(big))}):
        source, _ = jwks_source(ehr, lambda r, h=headers: httpx.Response(200, content=big, headers=h))
        with pytest.raises(CdsAuthError, match="larger than 65536 bytes"):
            source.key("ehr-es")


def test_jwks_is_cached_and_refreshed_for_a_new_kid_at_most_every_30_s(ehr):
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, json=ehr.jwks())

    source, clock = jwks_source(ehr, handler)
    assert source.key("ehr-es")["kid"] == "ehr-es"
    source.key("ehr-rs")
    assert len(calls) == 1  # cached
    with pytest.raises(CdsAuthError):
        source.key("rotated")
    assert len(calls) == 1  # an unknown kid within 30 s of the fetch: no new fetch
    clock[0] = 31
    with pytest.raises(CdsAuthError):
        source.key("rotated")
    assert len(calls) == 2
    clock[0] = 400  # past the 300 s cache
    source.key("ehr-es")
    assert len(calls) == 3


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500),
        httpx.Response(302, headers={"location": "https://elsewhere"}),
        httpx.Response(200, content=b"<html>"),
    ],
)
def test_a_broken_jwks_url_refuses(ehr, response):
    source, _ = jwks_source(ehr, lambda r: response)
    with pytest.raises(CdsAuthError):
        source.key("ehr-es")


# ---- configuration ---------------------------------------------------------------------------


def test_cds_clients_from_the_config_file(tmp_path, ehr):
    jwks = ehr.write_jwks(tmp_path / "ehr-jwks.json")
    config = tmp_path / "alliance-fhir.toml"
    config.write_text(
        f"""
[server]
url = "http://127.0.0.1:1/fhir"

[serve]
channel = "rest-hook"

[[cds.clients]]
issuer = "https://ehr.example.org"
jwks_url = "https://ehr.example.org/.well-known/jwks.json"

[[cds.clients]]
issuer = "https://other.example.org"
jwks_file = "{jwks}"
""",
        encoding="utf-8",
    )
    settings = load_cds_settings(config)
    assert [(c.issuer, c.jwks_url, c.jwks_file) for c in settings.clients] == [
        ("https://ehr.example.org", "https://ehr.example.org/.well-known/jwks.json", None),
        ("https://other.example.org", None, jwks),
    ]
    from alliance_fhir.server.settings import load_config

    assert load_config(file=config).url == "http://127.0.0.1:1/fhir"  # [serve] and [cds] are known tables


@pytest.mark.parametrize(
    "body, message",
    [
        ('[[cds.clients]]\nissuer = "a"\n', "exactly one of jwks_url and jwks_file"),
        ('[[cds.clients]]\nissuer = "a"\njwks_url = "ftp://x"\n', "jwks_url"),
        ('[[cds.clients]]\nissuer = "a"\njwks_file = "/nonexistent/jwks.json"\n', "is not a file"),
        ('[[cds.clients]]\nissuer = "a"\njwks_url = "https://a"\nkey = 1\n', "key"),
        ("[cds]\nmax_token_seconds = 99999\n", "max_token_seconds"),
        (
            '[cds]\nprompts = "/nonexistent/de.json"\n',
            r"\[cds\] prompts: /nonexistent/de.json: cannot read the prompt file",
        ),
        (
            '[[cds.clients]]\nissuer = "a"\njwks_url = "https://a"\n[[cds.clients]]\nissuer = "a"\njwks_url = "https://b"\n',
            "names an issuer twice",
        ),
    ],
)
def test_bad_cds_config_is_one_clear_error(tmp_path, body, message):
    config = tmp_path / "c.toml"
    config.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_cds_settings(config)


def test_a_clinics_prompt_file_is_a_cds_setting_checked_at_start(tmp_path):
    shipped = Path(__file__).resolve().parents[2] / "prompts" / "en.json"
    config = tmp_path / "c.toml"
    config.write_text(f'[cds]\nprompts = "{shipped}"\n', encoding="utf-8")
    assert load_cds_settings(config).prompts == shipped
    broken = tmp_path / "de.json"
    broken.write_text(shipped.read_text(encoding="utf-8").replace('"whose": "project decision"', '"whose": "ours"', 1))
    config.write_text(f'[cds]\nprompts = "{broken}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cds_settings(config)
    assert str(caught.value) == (
        f"{config}: [cds] prompts: {broken}: prompt 'split': whose must be 'literature' or 'project decision'"
    )


NOT_TIMES = [
    float("nan"),
    float("inf"),
    float("-inf"),
    "1700000000",
    True,
    False,
    [1],
    {"t": 1},
    1e308,
    -1e308,
    10**30,
    -1,
]


@pytest.mark.parametrize("claim", ["iat", "exp", "nbf"])
@pytest.mark.parametrize("value", NOT_TIMES, ids=repr)
def test_a_time_claim_that_is_not_a_finite_time_is_refused(ehr, verifier, claim, value):
    # iat: NaN compared false with everything, so "not in the future" and "lifetime over the limit" both let it
    # through; a bool is an int in Python; none of these may pass, or fail with anything but a CdsAuthError
    with pytest.raises(CdsAuthError) as caught:
        verifier.verify(f"Bearer {ehr.token(AUD, **{claim: value})}", AUD)
    assert "\n" not in str(caught.value)


def test_a_null_time_claim_is_a_missing_one(ehr, verifier):
    for claim in ("iat", "exp"):
        assert claim in refused(verifier, ehr.token(AUD, **{claim: None}))


def test_nbf_in_the_past_passes_and_in_the_future_is_refused(ehr, verifier):
    now = int(time.time())
    assert verifier.verify(f"Bearer {ehr.token(AUD, nbf=now - 300)}", AUD)["iss"] == ehr.issuer
    assert refused(verifier, ehr.token(AUD, nbf=now + 120)) in (
        "nbf is in the future",
        "token refused: ImmatureSignatureError",
    )


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectTimeout("no answer", request=request)


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (lambda r: httpx.Response(503), "the JWKS URL of {issuer} answered 503"),
        (_unreachable, "the JWKS URL of {issuer} failed: ConnectTimeout"),
    ],
)
def test_a_failed_jwks_fetch_says_which_client_and_why(ehr, handler, message):
    source, _ = jwks_source(ehr, handler)
    with pytest.raises(CdsAuthError) as info:
        source.key("ehr-es")
    assert str(info.value) == message.format(issuer=ehr.issuer)
