"""Message catalogues of the participant portal: bokmål (``nb``, complete), English (``en``,
complete) and nynorsk (``nn``; a missing text falls back to bokmål). Templates never hold text
of their own: every word comes from here through ``t(key, **params)``.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("nb", "nn", "en")
DEFAULT = "nb"
# each language named in itself, for the language switch
NATIVE = {"nb": "Norsk bokmål", "nn": "Norsk nynorsk", "en": "English"}

NB: dict[str, str] = {
    "site": "Hvelv – ditt samtykke",
    "skip": "Gå til hovedinnholdet",
    "lang.label": "Språk",
    "lang.change": "Bytt språk",
    "nav.label": "Meny",
    "nav.overview": "Oversikt",
    "nav.history": "Historikk",
    "nav.uses": "Hvem brukte dataene mine",
    "nav.signout": "Logg ut",
    "footer": "Spørsmål om samtykket? Kontakt prosjektet som inviterte deg.",
    # sign-in
    "signin.title": "Logg inn",
    "signin.intro": "Du har fått en invitasjon til å se og styre samtykket ditt i {project}.",
    "signin.how": (
        "Vi sender en engangskode på seks sifre til e-postadressen prosjektet har registrert."
    ),
    "signin.send": "Send meg en kode",
    "verify.title": "Skriv inn koden",
    "verify.sent": "Vi har sendt en kode til e-postadressen din. Den gjelder i {minutes} minutter.",
    "verify.label": "Engangskode (seks sifre)",
    "verify.submit": "Logg inn",
    "verify.resend": "Send en ny kode",
    "verify.attempts": "Du har {left} forsøk igjen før lenken slutter å virke.",
    "error.wrong_code": "Koden stemmer ikke. Sjekk e-posten og prøv igjen.",
    "error.code_expired": "Koden er for gammel. Be om en ny kode.",
    "error.code_format": "Koden består av seks sifre.",
    "error.code_recently_sent": (
        "Vi sendte nettopp en kode. Vent {seconds} sekunder før du ber om en ny."
    ),
    "error.code_not_requested": "Be om en kode først.",
    "error.no_contact_channel": (
        "Prosjektet har ingen e-postadresse til deg. Kontakt prosjektet for å få logget inn."
    ),
    "invalid.title": "Lenken virker ikke",
    "invalid.text": (
        "Lenken er brukt, er for gammel eller er ikke riktig. Lenker kan bare brukes én gang. "
        "Be prosjektet om en ny invitasjon."
    ),
    "burned.text": (
        "Det ble skrevet feil kode for mange ganger, så lenken er sperret. "
        "Be prosjektet om en ny invitasjon."
    ),
    "ended.title": "Du er logget ut",
    "ended.session_ended": "Økten er over. Åpne invitasjonslenken på nytt eller be om en ny.",
    "ended.session_idle": "Du ble logget ut fordi du ikke har gjort noe på en stund.",
    "ended.unauthenticated": "Du må logge inn fra invitasjonslenken for å se denne siden.",
    "ended.signed_out": "Du er logget ut. Takk for besøket.",
    "ended.representation": (
        "Du kan ikke lenger styre dette samtykket som foresatt. Samtykket er gått over til "
        "deltakeren selv."
    ),
    "error.title": "Noe gikk galt",
    "error.generic": "Vi kunne ikke gjøre dette. Prøv igjen, eller kontakt prosjektet.",
    "error.not_found": "Siden finnes ikke.",
    "error.csrf": "Skjemaet var for gammelt. Gå tilbake, last siden på nytt og prøv igjen.",
    "error.conflict": "Dette kan ikke endres nå. Se oversikten for det som gjelder.",
    "error.under_age": "Du kan gi samtykke selv fra du har fylt {age} år.",
    "error.proxy_ended": "Du representerer ikke lenger deltakeren.",
    "error.request_answered": "Forespørselen er allerede besvart.",
    "back.overview": "Tilbake til oversikten",
    # overview
    "overview.title": "Samtykket ditt",
    "overview.title.proxy": "Samtykket du styrer som foresatt",
    "overview.intro": "Her ser du hva du har sagt ja og nei til, og kan endre det når du vil.",
    "overview.proxy": (
        "Du er logget inn som foresatt for en deltaker født i {year}. Du styrer samtykket til "
        "deltakeren fyller {age} år ({date}). Da går samtykket over til deltakeren selv."
    ),
    "overview.handover": (
        "Du har fylt {age} år. Samtykket en foresatt ga for deg gjelder ikke lenger: svar selv "
        "på forespørslene under."
    ),
    "overview.waiting": "Venter på svar fra deg",
    "overview.nothing_waiting": "Ingenting venter på svar.",
    "overview.request": "Prosjektet ber om svar på «{title}».",
    "overview.request.coming_of_age": "Du bestemmer nå selv: svar på «{title}».",
    "overview.request.open": "Svar på forespørselen",
    "overview.studies": "Studier",
    "overview.withdrawn": "Du har trukket tilbake alt samtykke ({scope}).",
    "overview.open": "Se og endre",
    "overview.give": "Les og svar",
    "state.not_answered": "Ikke svart ennå",
    "state.consented": "Du har samtykket",
    "state.consented.proxy": "Foresatt har samtykket",
    "state.items": "{granted} av {total} ja",
    "item.yes": "Ja, du har sagt ja",
    "item.no": "Nei, du har sagt nei",
    "item.never": "Gjøres aldri",
    "choice.yes": "Ja",
    "choice.no": "Nei",
    # study page
    "study.items": "Det du kan si ja eller nei til",
    "study.readmore": "Les mer",
    "study.purpose": "Formål",
    "study.actions": "Hva som gjøres",
    "study.data": "Hvilke data",
    "study.data.any": "alle typer data",
    "study.grant": "Si ja til dette",
    "study.withdraw": "Si nei til dette",
    "study.one_step": "Endringen gjelder med en gang du trykker. Du kan ombestemme deg senere.",
    "study.give.title": "Gi samtykke",
    "study.give.help": "Kryss av for det du sier ja til. Det du ikke krysser av for, er nei.",
    "study.give.submit": "Lagre svaret mitt",
    "study.withdraw_all": "Trekk tilbake alt samtykke",
    "study.withdraw_all.help": (
        "Du kan trekke deg fra hele studien når som helst, uten å begrunne det."
    ),
    "study.withdraw_all.go": "Trekk tilbake alt",
    "study.fulltext": "Hele samtykketeksten",
    "study.restriction": "Dette gjøres aldri",
    # withdraw page
    "withdraw.title": "Trekk tilbake samtykket",
    "withdraw.legend": "Hva skal skje med dataene dine?",
    "scope.stop_use": "Stopp videre bruk",
    "scope.stop_use.help": (
        "Ingen nye analyser bruker dataene dine. Det som alt er gjort og publisert, blir stående."
    ),
    "scope.delete_data": "Slett dataene mine",
    "scope.delete_data.help": (
        "Videre bruk stopper med en gang, og prosjektet sletter opplysningene dine innen 30 dager."
    ),
    "scope.destroy_samples": "Destruer prøvene mine",
    "scope.destroy_samples.help": (
        "Videre bruk stopper, opplysningene slettes og biologiske prøver destrueres innen 30 dager."
    ),
    "withdraw.submit": "Trekk tilbake samtykket",
    "withdraw.cancel": "Avbryt",
    "withdraw.choose": "Velg hva som skal skje med dataene dine.",
    # confirmation
    "done.title": "Endringen er lagret",
    "done.given": "Svaret ditt på «{title}» er lagret.",
    "done.proxy_given": "Svaret på «{title}» er lagret.",
    "done.changed": "Endringen i «{title}» er lagret.",
    "done.withdrawn": "Samtykket er trukket tilbake: {scope}.",
    "done.declined": "Du har takket nei. Uten samtykke brukes ikke dataene dine til dette.",
    "done.effect": "Endringen gjelder fra nå av: {at}.",
    "done.receipt": "Last ned kvittering",
    "done.receipt.help": (
        "Kvitteringen er en signert fil (JSON) som viser hva du svarte og når. Ta vare på den."
    ),
    # history
    "history.title": "Historikk",
    "history.intro": "Alle endringer i samtykket, den nyeste først.",
    "history.empty": "Ingen endringer ennå.",
    "history.by.participant": "Gjort av deg",
    "history.by.proxy": "Gjort av foresatt",
    "history.by.system": "Gjort automatisk",
    "history.by.you_proxy": "Gjort av foresatt (deg)",
    "history.choices": "Svar",
    "history.receipt": "Kvittering for endring {seq}",
    "kind.given": "Samtykke gitt",
    "kind.proxy_given": "Samtykke gitt av foresatt",
    "kind.changed": "Samtykke endret",
    "kind.withdrawn": "Alt samtykke trukket tilbake",
    "kind.expired": "Samtykke utløpt",
    "kind.proxy_ended": "Foresatt styrer ikke lenger samtykket",
    # uses
    "uses.title": "Hvem brukte dataene mine",
    "uses.intro": (
        "Her er hver gang noen fikk lov til å bruke dataene dine fordi du hadde samtykket."
    ),
    "uses.empty": "Ingen har brukt dataene dine ennå.",
    "uses.when": "Når",
    "uses.who": "Hvem",
    "uses.what": "Til hva",
    "uses.how": "Hvordan",
    "uses.kind.decision": "enkeltvedtak",
    "uses.kind.snapshot": "uttrekk av data",
    # request page
    "request.title": "Svar på forespørselen",
    "request.give": "Gi samtykke",
    "request.decline": "Nei takk",
    "request.decline.help": "Uten svar regnes det som nei.",
    # plain-language purposes, actions and data
    "purpose.GRU": "all slags forskning",
    "purpose.HMB": "helse- og medisinsk forskning",
    "purpose.DS": "forskning på en bestemt sykdom: {disease}",
    "purpose.POA": "forskning på slekt og opphav",
    "purpose.NRES": "bruk uten begrensning",
    "action.store": "lagre",
    "action.analyse": "analysere",
    "action.link_registries": "koble med helseregistre",
    "action.share": "dele med andre forskere",
    "action.recontact": "kontakte deg igjen",
    "action.return_results": "gi deg resultater",
    "data.questionnaire": "spørreskjema",
    "data.registry": "registerdata",
    "data.biobank_sample": "biologiske prøver",
    "data.genome": "arvestoff (gener)",
    "data.clinical": "journalopplysninger",
    "data.imaging": "bilder",
    "data.wearable": "data fra sensorer du bærer",
    "data.any": "alle typer data",
}

EN: dict[str, str] = {
    "site": "Hvelv – your consent",
    "skip": "Skip to main content",
    "lang.label": "Language",
    "lang.change": "Change language",
    "nav.label": "Menu",
    "nav.overview": "Overview",
    "nav.history": "History",
    "nav.uses": "Who used my data",
    "nav.signout": "Sign out",
    "footer": "Questions about your consent? Contact the project that invited you.",
    "signin.title": "Sign in",
    "signin.intro": "You have been invited to see and manage your consent in {project}.",
    "signin.how": "We send a six-digit one-time code to the e-mail address the project holds.",
    "signin.send": "Send me a code",
    "verify.title": "Enter the code",
    "verify.sent": "We have sent a code to your e-mail address. It works for {minutes} minutes.",
    "verify.label": "One-time code (six digits)",
    "verify.submit": "Sign in",
    "verify.resend": "Send a new code",
    "verify.attempts": "You have {left} attempts left before the link stops working.",
    "error.wrong_code": "The code is not right. Check your e-mail and try again.",
    "error.code_expired": "The code is too old. Ask for a new one.",
    "error.code_format": "The code is six digits.",
    "error.code_recently_sent": "We just sent a code. Wait {seconds} seconds before asking again.",
    "error.code_not_requested": "Ask for a code first.",
    "error.no_contact_channel": (
        "The project has no e-mail address for you. Contact the project to sign in."
    ),
    "invalid.title": "The link does not work",
    "invalid.text": (
        "The link has been used, is too old or is not right. A link works only once. "
        "Ask the project for a new invitation."
    ),
    "burned.text": (
        "A wrong code was entered too many times, so the link is blocked. "
        "Ask the project for a new invitation."
    ),
    "ended.title": "You are signed out",
    "ended.session_ended": (
        "The session is over. Open the invitation link again or ask for a new one."
    ),
    "ended.session_idle": "You were signed out because nothing happened for a while.",
    "ended.unauthenticated": "Sign in from your invitation link to see this page.",
    "ended.signed_out": "You are signed out. Thank you for your visit.",
    "ended.representation": (
        "You can no longer manage this consent as a guardian. It has passed to the participant."
    ),
    "error.title": "Something went wrong",
    "error.generic": "We could not do this. Try again, or contact the project.",
    "error.not_found": "The page does not exist.",
    "error.csrf": "The form was too old. Go back, reload the page and try again.",
    "error.conflict": "This cannot be changed now. See the overview for what holds.",
    "error.under_age": "You can consent yourself once you have turned {age}.",
    "error.proxy_ended": "You no longer represent the participant.",
    "error.request_answered": "The request has already been answered.",
    "back.overview": "Back to the overview",
    "overview.title": "Your consent",
    "overview.title.proxy": "The consent you manage as a guardian",
    "overview.intro": "Here you see what you have said yes and no to, and can change it any time.",
    "overview.proxy": (
        "You are signed in as the guardian of a participant born in {year}. You manage the "
        "consent until the participant turns {age} ({date}). Then it passes to the participant."
    ),
    "overview.handover": (
        "You have turned {age}. The consent a guardian gave for you no longer counts: answer "
        "the requests below yourself."
    ),
    "overview.waiting": "Waiting for your answer",
    "overview.nothing_waiting": "Nothing is waiting for an answer.",
    "overview.request": "The project asks you to answer “{title}”.",
    "overview.request.coming_of_age": "You decide for yourself now: answer “{title}”.",
    "overview.request.open": "Answer the request",
    "overview.studies": "Studies",
    "overview.withdrawn": "You have withdrawn all consent ({scope}).",
    "overview.open": "See and change",
    "overview.give": "Read and answer",
    "state.not_answered": "Not answered yet",
    "state.consented": "You have consented",
    "state.consented.proxy": "A guardian has consented",
    "state.items": "{granted} of {total} yes",
    "item.yes": "Yes, you said yes",
    "item.no": "No, you said no",
    "item.never": "Never done",
    "choice.yes": "Yes",
    "choice.no": "No",
    "study.items": "What you can say yes or no to",
    "study.readmore": "Read more",
    "study.purpose": "Purpose",
    "study.actions": "What is done",
    "study.data": "Which data",
    "study.data.any": "all kinds of data",
    "study.grant": "Say yes to this",
    "study.withdraw": "Say no to this",
    "study.one_step": "A change counts as soon as you press. You can change your mind later.",
    "study.give.title": "Give consent",
    "study.give.help": "Tick what you say yes to. What you leave unticked is a no.",
    "study.give.submit": "Save my answer",
    "study.withdraw_all": "Withdraw all consent",
    "study.withdraw_all.help": (
        "You can leave the whole study at any time, without giving a reason."
    ),
    "study.withdraw_all.go": "Withdraw everything",
    "study.fulltext": "The full consent text",
    "study.restriction": "This is never done",
    "withdraw.title": "Withdraw your consent",
    "withdraw.legend": "What should happen to your data?",
    "scope.stop_use": "Stop further use",
    "scope.stop_use.help": (
        "No new analysis uses your data. What has already been done and published stays."
    ),
    "scope.delete_data": "Delete my data",
    "scope.delete_data.help": (
        "Further use stops at once, and the project deletes your data within 30 days."
    ),
    "scope.destroy_samples": "Destroy my samples",
    "scope.destroy_samples.help": (
        "Further use stops, your data is deleted and biological samples are destroyed within "
        "30 days."
    ),
    "withdraw.submit": "Withdraw my consent",
    "withdraw.cancel": "Cancel",
    "withdraw.choose": "Choose what should happen to your data.",
    "done.title": "Your change is saved",
    "done.given": "Your answer to “{title}” is saved.",
    "done.proxy_given": "The answer to “{title}” is saved.",
    "done.changed": "The change to “{title}” is saved.",
    "done.withdrawn": "Your consent is withdrawn: {scope}.",
    "done.declined": "You said no. Without consent your data is not used for this.",
    "done.effect": "The change counts from now: {at}.",
    "done.receipt": "Download the receipt",
    "done.receipt.help": (
        "The receipt is a signed file (JSON) showing what you answered and when. Keep it."
    ),
    "history.title": "History",
    "history.intro": "Every change to the consent, newest first.",
    "history.empty": "No changes yet.",
    "history.by.participant": "Made by you",
    "history.by.proxy": "Made by a guardian",
    "history.by.system": "Made automatically",
    "history.by.you_proxy": "Made by a guardian (you)",
    "history.choices": "Answers",
    "history.receipt": "Receipt for change {seq}",
    "kind.given": "Consent given",
    "kind.proxy_given": "Consent given by a guardian",
    "kind.changed": "Consent changed",
    "kind.withdrawn": "All consent withdrawn",
    "kind.expired": "Consent expired",
    "kind.proxy_ended": "A guardian no longer manages the consent",
    "uses.title": "Who used my data",
    "uses.intro": "Each time someone was allowed to use your data because you had consented.",
    "uses.empty": "Nobody has used your data yet.",
    "uses.when": "When",
    "uses.who": "Who",
    "uses.what": "For what",
    "uses.how": "How",
    "uses.kind.decision": "single decision",
    "uses.kind.snapshot": "data extract",
    "request.title": "Answer the request",
    "request.give": "Give consent",
    "request.decline": "No thanks",
    "request.decline.help": "No answer counts as no.",
    "purpose.GRU": "any kind of research",
    "purpose.HMB": "health and medical research",
    "purpose.DS": "research on one disease: {disease}",
    "purpose.POA": "research on ancestry and origin",
    "purpose.NRES": "use without restriction",
    "action.store": "store",
    "action.analyse": "analyse",
    "action.link_registries": "link with health registries",
    "action.share": "share with other researchers",
    "action.recontact": "contact you again",
    "action.return_results": "give you results",
    "data.questionnaire": "questionnaires",
    "data.registry": "registry data",
    "data.biobank_sample": "biological samples",
    "data.genome": "genetic data",
    "data.clinical": "medical records",
    "data.imaging": "images",
    "data.wearable": "data from sensors you wear",
    "data.any": "all kinds of data",
}

# nynorsk: the texts people meet first; the rest falls back to bokmål
NN: dict[str, str] = {
    "site": "Hvelv – samtykket ditt",
    "skip": "Gå til hovudinnhaldet",
    "lang.label": "Språk",
    "lang.change": "Byt språk",
    "nav.overview": "Oversikt",
    "nav.history": "Historikk",
    "nav.uses": "Kven brukte dataa mine",
    "nav.signout": "Logg ut",
    "signin.title": "Logg inn",
    "signin.intro": "Du har fått ein invitasjon til å sjå og styre samtykket ditt i {project}.",
    "signin.how": "Vi sender ein eingongskode på seks siffer til e-postadressa prosjektet har.",
    "signin.send": "Send meg ein kode",
    "verify.title": "Skriv inn koden",
    "verify.label": "Eingongskode (seks siffer)",
    "verify.submit": "Logg inn",
    "overview.title": "Samtykket ditt",
    "overview.intro": "Her ser du kva du har sagt ja og nei til, og kan endre det når du vil.",
    "overview.studies": "Studiar",
    "state.consented": "Du har samtykt",
    "state.not_answered": "Ikkje svart enno",
    "study.grant": "Sei ja til dette",
    "study.withdraw": "Sei nei til dette",
    "study.readmore": "Les meir",
    "withdraw.title": "Trekk tilbake samtykket",
    "done.title": "Endringa er lagra",
    "done.receipt": "Last ned kvittering",
    "history.title": "Historikk",
    "uses.title": "Kven brukte dataa mine",
}

CATALOGUES: dict[str, Mapping[str, str]] = {"nb": NB, "nn": {**NB, **NN}, "en": EN}


def normalise(language: str | None) -> str:
    return language if language in LANGUAGES else DEFAULT


def translate(language: str, key: str, **params: object) -> str:
    """The text for ``key`` in ``language`` (a missing key is a bug: KeyError)."""
    text = CATALOGUES[normalise(language)][key]
    return text.format(**params) if params else text


def accept_language(header: str | None) -> str:
    """The first supported language of an Accept-Language header ("no" means bokmål)."""
    for part in (header or "").split(","):
        tag = part.split(";")[0].strip().lower()
        primary = tag.split("-")[0]
        if primary in ("nb", "no"):
            return "nb"
        if primary in LANGUAGES:
            return primary
    return DEFAULT
