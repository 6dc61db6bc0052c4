"""Every text of the portal comes from the message catalogues: complete in bokmål and English,
nynorsk falling back to bokmål, and no words typed into the templates themselves."""

from __future__ import annotations

import re
from importlib import resources

from hvelv.consent.mapping import CONSENT_ACTIONS, DATA_CLASSES
from hvelv.consent.model import ActorKind, EventKind, WithdrawalScope
from hvelv.portal import i18n

TEMPLATES = resources.files("hvelv.portal").joinpath("templates")


def _templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in TEMPLATES.iterdir() if p.name.endswith(".html")}


def test_bokmal_and_english_have_the_same_texts_and_nynorsk_falls_back() -> None:
    assert set(i18n.NB) == set(i18n.EN)
    assert set(i18n.NN) <= set(i18n.NB)
    assert set(i18n.CATALOGUES["nn"]) == set(i18n.NB)
    for language in i18n.LANGUAGES:
        for key, text in i18n.CATALOGUES[language].items():
            assert text.strip(), (language, key)
            # the same placeholders in every language
            assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", i18n.NB[key]))


def test_every_key_the_templates_use_exists() -> None:
    used: set[str] = set()
    for text in _templates().values():
        used |= set(re.findall(r"""t\(\s*["']([a-z_.]+)["']""", text))
    assert used
    missing = {k for k in used if not k.endswith(".")} - set(i18n.NB)
    assert not missing
    # keys built from values: scopes, event kinds, actors, purposes, actions, data classes
    built = (
        [f"scope.{s.value}" for s in WithdrawalScope]
        + [f"scope.{s.value}.help" for s in WithdrawalScope]
        + [f"kind.{k.value}" for k in EventKind]
        + [f"history.by.{a.value}" for a in ActorKind]
        + [f"action.{a}" for a in CONSENT_ACTIONS]
        + [f"data.{d}" for d in DATA_CLASSES]
        + [f"done.{k}" for k in ("given", "proxy_given", "changed")]
        + [f"uses.kind.{k}" for k in ("decision", "snapshot")]
    )
    assert not [k for k in built if k not in i18n.NB]


def test_templates_hold_no_text_of_their_own() -> None:
    for name, text in _templates().items():
        bare = re.sub(r"{%.*?%}|{{.*?}}|{#.*?#}", " ", text, flags=re.S)
        bare = re.sub(r"<!doctype html>", " ", bare, flags=re.I)
        bare = re.sub(r"<[^>]*>", " ", bare, flags=re.S)  # tags and their attributes
        words = re.findall(r"[A-Za-zÆØÅæøå]{2,}", bare)
        assert not words, f"{name} has text outside the catalogues: {words[:5]}"
        # attributes people read (labels, titles) come from the catalogues too
        for attribute in re.findall(r'(?:aria-label|title|alt|placeholder)="([^"]*)"', text):
            assert attribute.startswith("{{"), (name, attribute)


def test_accept_language_picks_a_supported_language() -> None:
    assert i18n.accept_language("en-GB,en;q=0.9") == "en"
    assert i18n.accept_language("no;q=0.8") == "nb"
    assert i18n.accept_language("nn-NO") == "nn"
    assert i18n.accept_language("de-DE") == "nb"
    assert i18n.accept_language(None) == "nb"
