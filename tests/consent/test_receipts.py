"""Consent receipts: fields, signing, verification and tamper detection."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.audit.ledger import canonical
from hvelv.consent.model import EventKind, WithdrawalScope
from hvelv.consent.receipts import (
    KANTARA_VERSION,
    Controller,
    MalformedReceipt,
    ReceiptError,
    TamperedReceipt,
    WrongKey,
    build_receipt,
    load_public_key,
    public_key_pem,
    sign_receipt,
    verify_receipt,
)
from hvelv.crypto.keyring import public_key_id
from tests.consent import factories as f

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
OUS = Controller("Oslo University Hospital", "personvern@ous.example", email="dpo@ous.example")
LEDGER_HASH = hashlib.sha256(b"event").hexdigest()


def receipt(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "event": f.given(7, f.day(3), {"hmb": True, "cancer": True, "ancestry": False}),
        "event_id": "ce-0007",
        "subject_pseudonym": "pz-4f2a9c",
        "controller": OUS,
        "ledger_position": 7,
        "ledger_hash": LEDGER_HASH,
        "issued_at": f.day(3.001),
        "template": f.MAIN_V1,
        "receipt_id": "0b7c0f1e-1111-4c2e-9d55-1c7f1a2b3c4d",
        "policy_url": "https://ous.example/study/main",
        "study": "The MAIN study",
    }
    args.update(changes)
    return build_receipt(**args)


def test_receipt_has_the_consent_receipt_fields() -> None:
    r = receipt()
    assert r["version"] == KANTARA_VERSION
    assert r["consentReceiptID"] == "0b7c0f1e-1111-4c2e-9d55-1c7f1a2b3c4d"
    assert r["consentTimestamp"] == int(f.day(3).timestamp())
    assert r["jurisdiction"] == "NO"
    assert r["piiPrincipalId"] == "pz-4f2a9c"
    assert r["piiControllers"] == [
        {
            "piiController": "Oslo University Hospital",
            "contact": "personvern@ous.example",
            "email": "dpo@ous.example",
        }
    ]
    (service,) = r["services"]
    assert service["service"] == "The MAIN study"
    by_item = {p["itemId"]: p for p in service["purposes"]}
    assert by_item["hmb"]["granted"] is True
    assert by_item["ancestry"]["granted"] is False
    assert by_item["commercial-partner"]["granted"] is None
    assert "granted" not in by_item["no-genome-share"]
    assert by_item["no-genome-share"]["effect"] == "deny"
    cancer = by_item["cancer"]
    assert cancer["purposeCategory"][:2] == [
        {"code": "DS", "id": "DUO:0000007", "label": "disease specific research"},
        {"code": "disease", "id": f.CANCER, "label": "cancer"},
    ]
    assert {c["code"] for c in cancer["purposeCategory"][2:]} == {"PUB", "COL"}
    assert cancer["actions"] == ["analyse"]
    assert cancer["piiCategory"] == ["any"]
    hv = r["hvelv"]
    assert hv["event"] == {
        "id": "ce-0007",
        "seq": 7,
        "kind": "given",
        "at": "2024-01-04T00:00:00.000000Z",
        "actor": "participant",
        "choices": {"ancestry": False, "cancer": True, "hmb": True},
        "withdrawalScope": None,
    }
    assert hv["template"] == {
        "templateId": "main",
        "versionId": "main@1",
        "textHash": f.HASH_NB,
    }
    assert hv["ledger"] == {"position": 7, "hash": LEDGER_HASH}
    json.dumps(r)  # plain JSON


def test_withdrawal_receipt_has_no_template_and_a_scope() -> None:
    r = receipt(event=f.withdrawn(9, f.day(5), WithdrawalScope.DESTROY_SAMPLES), template=None)
    assert r["services"] == []
    assert r["hvelv"]["event"]["kind"] == EventKind.WITHDRAWN.value
    assert r["hvelv"]["event"]["withdrawalScope"] == "destroy_samples"


@pytest.mark.parametrize("subject", ["15108695088", "151086 95088", ""])
def test_a_national_id_is_never_the_subject(subject: str) -> None:
    with pytest.raises(ReceiptError, match="pseudonym"):
        receipt(subject_pseudonym=subject)


def test_template_must_be_the_events() -> None:
    with pytest.raises(ReceiptError, match="not the one the event names"):
        receipt(template=f.MAIN_V2)


def test_sign_and_verify() -> None:
    signed = sign_receipt(receipt(), KEY)
    assert signed["proof"]["keyId"] == public_key_id(KEY.public_key())
    assert verify_receipt(signed, KEY.public_key()) is True
    # the signature is over the canonical JSON of everything but the proof
    body = {k: v for k, v in signed.items() if k != "proof"}
    KEY.public_key().verify(
        base64.urlsafe_b64decode(signed["proof"]["signatureValue"] + "=="),
        canonical(body),
    )
    # key order and whitespace do not matter: it survives a JSON round trip
    again = json.loads(json.dumps(signed, indent=3, sort_keys=False))
    assert verify_receipt(dict(reversed(list(again.items()))), KEY.public_key())
    # re-signing replaces the proof
    assert sign_receipt(signed, KEY) == signed


def test_wrong_key_is_named() -> None:
    signed = sign_receipt(receipt(), KEY)
    with pytest.raises(WrongKey, match="signing key"):
        verify_receipt(signed, OTHER.public_key())
    # a signature by another key under this key's id is a tampered receipt
    forged = sign_receipt(receipt(), OTHER)
    forged["proof"]["keyId"] = public_key_id(KEY.public_key())
    with pytest.raises(TamperedReceipt):
        verify_receipt(forged, KEY.public_key())


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("proof"), "lacks proof"),
        (lambda d: d.pop("piiPrincipalId"), "lacks piiPrincipalId"),
        (lambda d: d.__setitem__("consentTimestamp", "yesterday"), "consentTimestamp"),
        (lambda d: d.__setitem__("consentTimestamp", True), "consentTimestamp"),
        (lambda d: d.__setitem__("version", "KI-CR-v0.9"), "version"),
        (lambda d: d["proof"].__setitem__("type", "RSA"), "proof type"),
        (lambda d: d["proof"].__setitem__("extra", "x"), "exactly"),
        (lambda d: d["proof"].__setitem__("signatureValue", "%%%"), "base64url"),
        (lambda d: d["hvelv"].__setitem__("x", 0.5), "fraction"),
    ],
)
def test_malformed_receipts_are_refused_with_a_reason(mutate: Any, needle: str) -> None:
    signed = sign_receipt(receipt(), KEY)
    mutate(signed)
    with pytest.raises(MalformedReceipt, match=needle):
        verify_receipt(signed, KEY.public_key())


def test_not_an_object() -> None:
    with pytest.raises(MalformedReceipt, match="JSON object"):
        verify_receipt([1, 2], KEY.public_key())


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every member and list element, at any depth (containers and leaves)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from leaf_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*prefix, i)
            yield from leaf_paths(v, (*prefix, i))


SIGNED = sign_receipt(receipt(), KEY)
PATHS = list(leaf_paths(SIGNED))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=4,
)


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(PATHS), new=json_values, delete=st.booleans())
def test_any_single_change_fails_verification(
    path: tuple[Any, ...], new: Any, delete: bool
) -> None:
    doc = copy.deepcopy(SIGNED)
    parent = _get(doc, path[:-1])
    old = parent[path[-1]]
    if delete:
        del parent[path[-1]]
    else:
        if canonical(new) == canonical(old):
            return
        parent[path[-1]] = new
    with pytest.raises(ReceiptError):
        verify_receipt(doc, KEY.public_key())


@settings(max_examples=100, deadline=None)
@given(
    name=st.text(min_size=1, max_size=30),
    pseudonym=st.from_regex(r"pz-[0-9a-f]{6}", fullmatch=True),
)
def test_any_receipt_signs_and_verifies(name: str, pseudonym: str) -> None:
    r = receipt(controller=Controller(name, "x@example.org"), subject_pseudonym=pseudonym)
    assert verify_receipt(sign_receipt(r, KEY), KEY.public_key())


def test_public_key_pem_round_trip() -> None:
    pem = public_key_pem(KEY.public_key())
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert public_key_id(load_public_key(pem)) == public_key_id(KEY.public_key())
    with pytest.raises(ReceiptError, match="PEM"):
        load_public_key("not a key")
