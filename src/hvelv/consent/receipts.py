"""Consent receipts: a signed JSON record of one consent ledger event, for the participant.

The fields follow the Kantara Initiative Consent Receipt Specification (v1.1) and the record of
ISO/IEC TS 27560 (consent record information structure): version, jurisdiction, timestamp,
collection method, receipt id, language, PII principal (here a *pseudonym*, never a national
identity number), PII controller(s) with contact, policy URL, services → purposes with purpose
categories (DUO codes and labels), PII categories (data classes), actions, termination; plus
what Hvelv adds (``hvelv`` member): the event (id, kind, time, who acted as participant or
proxy, per-item choices, withdrawal scope), the template version and its text hash, and the
ledger position and hash the event has in the consent ledger.

Signing (:func:`sign_receipt`): Ed25519 over the canonical JSON of the receipt without its
``proof`` member (:func:`hvelv.audit.ledger.canonical`: sorted keys, no spaces, UTF-8); the
signature, the key id and the algorithm go into a detached ``proof`` member.
:func:`verify_receipt` recomputes the canonical form and checks the signature with the
platform's public key, raising :class:`TamperedReceipt` or :class:`MalformedReceipt`.

Receipts hold no floats (their canonical text would depend on the JSON library).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from hvelv.audit.ledger import canonical, format_ts
from hvelv.consent.diseases import DiseaseHierarchy, default_hierarchy
from hvelv.consent.model import ConsentEvent, Effect, Provision, Template, require_aware
from hvelv.crypto.keyring import public_key_id

__all__ = [
    "KANTARA_VERSION",
    "PROOF_TYPE",
    "RECEIPT_PROFILE",
    "Controller",
    "MalformedReceipt",
    "ReceiptError",
    "TamperedReceipt",
    "WrongKey",
    "build_receipt",
    "load_public_key",
    "public_key_pem",
    "sign_receipt",
    "verify_receipt",
]

KANTARA_VERSION: Final = "KI-CR-v1.1.0"
RECEIPT_PROFILE: Final = "hvelv-consent-receipt/1"
PROOF_TYPE: Final = "Ed25519Signature-hvelv-canonical-json-1"
_NATIONAL_ID_LIKE: Final = re.compile(r"\d{6}\s?\d{5}")


class ReceiptError(ValueError):
    """A receipt cannot be built, signed or verified."""


class MalformedReceipt(ReceiptError):
    """The document is not a receipt of this profile (missing or ill-typed members)."""


class TamperedReceipt(ReceiptError):
    """The signature does not match the receipt: it was changed after signing."""


class WrongKey(ReceiptError):
    """The receipt names a different signing key than the one given."""


@dataclass(frozen=True, slots=True)
class Controller:
    """The PII controller (the institution responsible for the study)."""

    name: str
    contact: str
    email: str | None = None
    phone: str | None = None
    address: str | None = None
    url: str | None = None


def _duo(p: Provision, diseases: DiseaseHierarchy) -> list[dict[str, str]]:
    term = p.purpose.code.term
    codes = [{"code": term.code.value, "id": term.id, "label": term.label}]
    disease = p.purpose.disease
    if disease is not None:
        label = diseases.term(disease).label if disease in diseases else disease
        codes.append({"code": "disease", "id": disease, "label": label})
    for m in sorted(p.modifiers.codes):
        codes.append({"code": m.value, "id": m.term.id, "label": m.term.label})
    return codes


def _purpose(
    p: Provision, choices: Mapping[str, bool], diseases: DiseaseHierarchy
) -> dict[str, Any]:
    duo = _duo(p, diseases)
    entry: dict[str, Any] = {
        "itemId": p.item_id,
        "effect": p.effect.value,
        "purpose": duo[0]["label"]
        if p.purpose.disease is None
        else f"{duo[0]['label']}: {duo[1]['label']}",
        "purposeCategory": duo,
        "consentType": "EXPLICIT",
        "piiCategory": sorted(p.data_classes) if p.data_classes is not None else ["any"],
        "actions": sorted(p.actions) if p.actions is not None else ["any"],
        "thirdPartyDisclosure": p.actions is None or "share" in p.actions,
        "termination": format_ts(p.period.end)
        if p.period is not None and p.period.end is not None
        else "until withdrawn",
    }
    if p.effect is Effect.PERMIT:
        entry["granted"] = choices.get(p.item_id)
    return entry


def build_receipt(
    *,
    event: ConsentEvent,
    event_id: str,
    subject_pseudonym: str,
    controller: Controller,
    ledger_position: int,
    ledger_hash: str,
    issued_at: dt.datetime,
    template: Template | None = None,
    jurisdiction: str = "NO",
    language: str = "nb",
    collection_method: str = "web portal",
    policy_url: str | None = None,
    study: str | None = None,
    receipt_id: str | None = None,
    diseases: DiseaseHierarchy | None = None,
) -> dict[str, Any]:
    """A receipt for one ledger event (unsigned; pass it to :func:`sign_receipt`).

    ``template`` is the version the event names (``None`` for events without one: withdrawn,
    proxy_ended, expired of all). ``subject_pseudonym`` must be the per-project pseudonym: a
    value shaped like an 11-digit national identity number is refused. ``ledger_hash`` is the
    event's hash in the consent ledger's hash chain (hex).
    """
    require_aware(issued_at, "issued_at")
    if not subject_pseudonym or _NATIONAL_ID_LIKE.fullmatch(subject_pseudonym.strip()):
        raise ReceiptError("the receipt subject must be a pseudonym, never a national id")
    if template is not None and template.version_id != event.template_version_id:
        raise ReceiptError(
            f"template {template.version_id} is not the one the event names "
            f"({event.template_version_id})"
        )
    if ledger_position < 1 or not re.fullmatch(r"[0-9a-f]{64}", ledger_hash):
        raise ReceiptError("ledger_position must be >= 1 and ledger_hash 64 hex digits")
    diseases = diseases if diseases is not None else default_hierarchy()
    choices = event.choice_map
    contact = {
        "piiController": controller.name,
        "contact": controller.contact,
        "email": controller.email,
        "phone": controller.phone,
        "address": controller.address,
        "piiControllerUrl": controller.url,
    }
    services: list[dict[str, Any]] = []
    if template is not None:
        services.append(
            {
                "service": study or template.template_id,
                "purposes": [_purpose(p, choices, diseases) for p in template.provisions],
            }
        )
    hvelv: dict[str, Any] = {
        "event": {
            "id": event_id,
            "seq": event.seq,
            "kind": event.kind.value,
            "at": format_ts(event.at),
            "actor": event.actor.kind.value,  # never the actor's identity
            "choices": dict(event.choices),
            "withdrawalScope": event.scope.value if event.scope is not None else None,
        },
        "template": {
            "templateId": template.template_id if template is not None else None,
            "versionId": event.template_version_id,
            "textHash": event.text_hash,
        },
        "ledger": {"position": ledger_position, "hash": ledger_hash},
    }
    return {
        "version": KANTARA_VERSION,
        "profile": RECEIPT_PROFILE,
        "jurisdiction": jurisdiction,
        "consentTimestamp": int(event.at.timestamp()),
        "issuedAt": format_ts(issued_at),
        "collectionMethod": collection_method,
        "consentReceiptID": receipt_id or str(uuid.uuid4()),
        "language": language,
        "piiPrincipalId": subject_pseudonym,
        "piiControllers": [{k: v for k, v in contact.items() if v is not None}],
        "policyUrl": policy_url,
        "services": services,
        "sensitive": True,
        "spiCat": ["health data"],
        "hvelv": hvelv,
    }


_REQUIRED: Final[Mapping[str, type | tuple[type, ...]]] = {
    "version": str,
    "profile": str,
    "jurisdiction": str,
    "consentTimestamp": int,
    "issuedAt": str,
    "collectionMethod": str,
    "consentReceiptID": str,
    "language": str,
    "piiPrincipalId": str,
    "piiControllers": list,
    "services": list,
    "sensitive": bool,
    "hvelv": dict,
    "proof": dict,
}
_PROOF: Final = ("type", "keyId", "signatureValue")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _no_floats(value: Any, where: str = "receipt") -> None:
    if isinstance(value, float):
        raise MalformedReceipt(f"{where} holds a number with a fraction; receipts hold none")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise MalformedReceipt(f"{where} has a non-string key")
            _no_floats(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _no_floats(v, f"{where}[{i}]")
    elif value is not None and not isinstance(value, str | int | bool):
        raise MalformedReceipt(f"{where} holds a {type(value).__name__}, not JSON")


def _signed_bytes(receipt: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in receipt.items() if k != "proof"}
    _no_floats(body)
    return canonical(body)


def sign_receipt(receipt: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The receipt with a detached ``proof``: Ed25519 over its canonical JSON (without
    ``proof``), the key id (:func:`hvelv.crypto.keyring.public_key_id`) and the proof type."""
    signature = private_key.sign(_signed_bytes(receipt))
    signed = {k: v for k, v in receipt.items() if k != "proof"}
    signed["proof"] = {
        "type": PROOF_TYPE,
        "keyId": public_key_id(private_key.public_key()),
        "signatureValue": _b64url(signature),
    }
    return signed


def verify_receipt(document: Any, public_key: Ed25519PublicKey) -> bool:
    """True when ``document`` is a receipt of this profile signed with ``public_key``.

    Raises :class:`MalformedReceipt` (not a receipt, a member missing or of the wrong type, an
    unknown proof type), :class:`WrongKey` (signed with another key) or
    :class:`TamperedReceipt` (the signature does not match: a member was changed).
    """
    if not isinstance(document, Mapping):
        raise MalformedReceipt("a receipt is a JSON object")
    missing = [k for k in _REQUIRED if k not in document]
    if missing:
        raise MalformedReceipt(f"the receipt lacks {', '.join(missing)}")
    for key, kind in _REQUIRED.items():
        value = document[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MalformedReceipt(f"receipt member {key!r} has the wrong type")
    if document["version"] != KANTARA_VERSION or document["profile"] != RECEIPT_PROFILE:
        raise MalformedReceipt(
            f"unsupported receipt version/profile {document['version']!r}/{document['profile']!r}"
        )
    proof = document["proof"]
    if sorted(proof) != sorted(_PROOF) or not all(isinstance(proof[k], str) for k in _PROOF):
        raise MalformedReceipt(f"proof must have exactly the string members {list(_PROOF)}")
    if proof["type"] != PROOF_TYPE:
        raise MalformedReceipt(f"unknown proof type {proof['type']!r}")
    expected_kid = public_key_id(public_key)
    if proof["keyId"] != expected_kid:
        raise WrongKey(
            f"the receipt names signing key {proof['keyId']!r}, the key given is {expected_kid!r}"
        )
    try:
        signature = _unb64url(proof["signatureValue"])
    except (binascii.Error, ValueError):
        raise MalformedReceipt("proof.signatureValue is not base64url") from None
    if len(signature) != 64 or _b64url(signature) != proof["signatureValue"]:
        raise TamperedReceipt("the signature does not match the receipt")
    try:
        public_key.verify(signature, _signed_bytes(document))
    except InvalidSignature:
        raise TamperedReceipt("the signature does not match the receipt") from None
    return True


def public_key_pem(key: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), for offline verification."""
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: bytes | str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; :class:`ReceiptError` for anything else."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ReceiptError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ReceiptError("the public key is not an Ed25519 key")
    return key
