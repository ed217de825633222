"""Mail texts in the receivers' and subscribers' languages (English when one is missing)."""

from __future__ import annotations

TIP_MAIL = {
    "en": ("New submission for you", "Hello {name},\n\na new submission (number {submission}) "
           "is waiting for you. Log in to read tip {tip}.\n"),
    "de": ("Neue Meldung für Sie", "Hallo {name},\n\neine neue Meldung (Nummer {submission}) "
           "wartet auf Sie. Melden Sie sich an, um Tipp {tip} zu lesen.\n"),
    "it": ("Nuova segnalazione per te", "Ciao {name},\n\nuna nuova segnalazione (numero "
           "{submission}) ti aspetta. Accedi per leggere la segnalazione {tip}.\n"),
    "fr": ("Nouveau signalement pour vous", "Bonjour {name},\n\nun nouveau signalement "
           "(numéro {submission}) vous attend. Connectez-vous pour lire le signalement {tip}.\n"),
}

DIGEST_SUBJECT = {
    "en": "Digest: {count} notifications",
    "de": "Zusammenfassung: {count} Benachrichtigungen",
    "it": "Riepilogo: {count} notifiche",
    "fr": "Résumé : {count} notifications",
}

EVENT_LABEL = {
    "en": {"workorder.status": "Work order status changed", "workorder.created": "New work order"},
    "de": {"workorder.status": "Status des Arbeitsauftrags geändert",
           "workorder.created": "Neuer Arbeitsauftrag"},
}


def tip_mail(language: str, *, name: str, submission: int, tip: int) -> tuple[str, str]:
    subject, body = TIP_MAIL.get(language, TIP_MAIL["en"])
    return subject, body.format(name=name, submission=submission, tip=tip)


def digest_subject(count: int) -> str:
    return DIGEST_SUBJECT["en"].format(count=count)


def event_label(language: str, event_type: str) -> str:
    labels = EVENT_LABEL.get(language) or EVENT_LABEL["en"]
    return labels.get(event_type) or EVENT_LABEL["en"].get(event_type) or event_type
