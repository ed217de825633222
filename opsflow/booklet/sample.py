"""A generated Indico export (`detail=sessions`) of any size, for tests and benchmarks.

Deterministic: the same arguments give the same export. Sessions are listed out of order and
contributions within a session too, so that ordering is exercised.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

WORDS = ("beam accelerator cavity magnet vacuum cryogenic lattice emittance injector linac "
         "undulator diagnostics feedback klystron plasma wakefield bunch luminosity collider "
         "synchrotron radiation photon electron proton ion source target detector").split()
AFFILIATIONS = ["CERN", "DESY", "Elettra Sincrotrone Trieste", "PSI", "Fermilab", "KEK",
                "Diamond Light Source", "ESRF", "SLAC", "GSI"]
FIRST = ["Anna", "Bruno", "Chiara", "David", "Elena", "Franz", "Giulia", "Hiro", "Ines", "Jan"]
LAST = ["Rossi", "Müller", "Dubois", "Tanaka", "Smith", "Novak", "Garcia", "Berg", "Costa", "Ito"]


def _date(moment: datetime) -> dict[str, str]:
    return {"date": f"{moment:%Y-%m-%d}", "time": f"{moment:%H:%M:%S}", "tz": str(moment.tzinfo)}


def _person(rng: random.Random, index: int) -> dict[str, Any]:
    first, last = FIRST[index % len(FIRST)], LAST[(index * 7 + rng.randrange(10)) % len(LAST)]
    return {"_type": "ContributionParticipation", "first_name": first, "last_name": f"{last}{index}",
            "fullName": f"{first} {last}{index}", "affiliation": rng.choice(AFFILIATIONS),
            "emailHash": "0" * 32, "id": str(index)}


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return (" ".join(words))[:length - 1] + "."


def generate_export(sessions: int = 3, contributions: int = 12, authors: int = 3,
                    abstract_chars: int = 300, loose: int = 1, poster_every: int = 4,
                    seed: int = 7, timezone: str = "Europe/Rome") -> dict[str, Any]:
    """An export of one event with `sessions` blocks holding `contributions` in all (plus
    `loose` contributions outside any session); every `poster_every`-th session is a poster
    session. Times are given in UTC, as Indico may, while the event's zone is `timezone`."""
    rng = random.Random(seed)
    zone = ZoneInfo(timezone)
    start = datetime(2026, 5, 11, 9, 0, tzinfo=zone)
    person = 0
    blocks = []
    per_session = max(1, contributions // max(1, sessions))
    made = 0
    for s in range(sessions):
        count = per_session if s < sessions - 1 else contributions - made
        made += count
        day, slot = divmod(s, 4)
        begin = start + timedelta(days=day, hours=2 * slot)
        poster = bool(poster_every) and (s + 1) % poster_every == 0
        code = f"{'MTUWTF'[day % 6]}{'OP' [poster]}{'ABCD'[slot]}{s:02d}"
        members = []
        for c in range(count):
            people = [_person(rng, person + i) for i in range(authors)]
            person += authors
            at = begin + timedelta(minutes=(c * 90) // max(1, count))
            members.append({
                "_type": "Contribution", "id": str(1000 + len(blocks) * 1000 + c),
                "friendly_id": len(blocks) * 1000 + c, "code": f"{code}{c + 1:02d}",
                "title": f"{_text(rng, 60).capitalize()[:-1]} ({code}{c + 1:02d})",
                "description": _text(rng, abstract_chars), "duration": 20,
                "startDate": _date(at.astimezone(ZoneInfo("UTC"))), "session": f"Session {code}",
                "track": "Beam dynamics", "type": "Poster" if poster else "Oral",
                "board_number": f"B{c + 1}" if poster else None,
                "speakers": [people[0]], "primaryauthors": people[: max(1, authors // 2)],
                "coauthors": people[max(1, authors // 2):], "keywords": ["beam"],
                "material": [], "folders": [], "references": [],
            })
        rng.shuffle(members)
        convener = _person(rng, 90000 + s)
        convener["_type"] = "SlotChair"
        blocks.append({
            "_type": "SessionSlot", "id": s + 1, "title": f"Session {code}",
            "startDate": _date(begin), "endDate": _date(begin + timedelta(minutes=90)),
            "conveners": [convener], "contributions": members,
            "session": {"_type": "Session", "title": f"Session {code}", "code": code,
                        "isPoster": poster, "sessionConveners": [convener]},
        })
    rng.shuffle(blocks)
    outside = [{
        "_type": "Contribution", "id": str(90000 + i), "friendly_id": 90000 + i,
        "title": f"Public lecture {i + 1}", "description": _text(rng, abstract_chars),
        "startDate": _date(start + timedelta(days=5, hours=i)), "duration": 60,
        "session": None, "speakers": [_person(rng, 80000 + i)],
        "primaryauthors": [_person(rng, 80000 + i)], "coauthors": [],
    } for i in range(loose)]
    end = start + timedelta(days=5)
    return {
        "count": 1, "additionalInfo": {}, "_type": "HTTPAPIResult", "ts": 1779000000,
        "url": "https://indico.example.org/export/event/42.json?detail=sessions",
        "results": [{
            "_type": "Conference", "id": "42", "title": "International Particle Accelerator "
            "Conference", "startDate": _date(start), "endDate": _date(end),
            "timezone": timezone, "location": "Venice", "contributions": outside,
            "sessions": blocks, "category": "Conferences", "chairs": [],
        }],
    }
